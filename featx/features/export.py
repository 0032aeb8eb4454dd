"""Cached features out of featx: one file with a row per image (path, label, split, then the features)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from featx.cache.atomic import atomic_path
from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.features.load import load

FORMATS = {"csv": ".csv", "parquet": ".parquet", "npy": ".npz"}


def export(entry=None, layers=None, *, format: str = "csv", output=None, cache=None, log=print) -> Path:
    """Write the valid images' features of `layers` (None: every cached layer) of `entry` (of `cache`, as in
    featx.load) to `output`; returns its path.

    csv / parquet : columns path, label (class name), split, then <layer>_<i> per feature (parquet needs the
    optional package pyarrow). npy : one .npz holding `features` (n_images, n_features), `path`, `label`,
    `split`, `feature_names` and `class_names`, read with numpy.load(path, allow_pickle=False).
    output : default <entry>-<layers>.<ext> in the current folder. The file is written whole or not at all.
    """
    if format not in FORMATS:
        raise FeatxError(f"unknown export format '{format}'; choose one of {', '.join(FORMATS)}")
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise FeatxError(
                "--format parquet needs the package pyarrow; pip install pyarrow, or use --format csv or npy"
            ) from None
    entry = Cache.resolve(cache).open(entry)
    features = load(entry, layers=layers)
    X, meta = features.X, features.meta
    label = re.sub(
        r"[^\w.,-]+",
        "_",
        ",".join(features.layers) if layers is None else (layers if isinstance(layers, str) else ",".join(layers)),
    )[:100]
    path = Path(output) if output else Path(f"{entry.name}-{label}{FORMATS[format]}")
    names = [f"{layer}_{i}" for layer, (start, stop) in features.feature_slices.items() for i in range(stop - start)]
    columns = {
        "path": meta["path"].to_numpy(str),
        "label": meta["class_name"].to_numpy(str),
        "split": meta["split"].to_numpy(str),
    }
    try:
        with atomic_path(path) as tmp:
            if format == "npy":
                with open(tmp, "wb") as f:
                    np.savez(
                        f, features=X, feature_names=np.array(names), class_names=np.array(entry.class_names), **columns
                    )
            else:
                import pandas as pd

                table = pd.concat([pd.DataFrame(columns), pd.DataFrame(X, columns=names)], axis=1)
                table.to_csv(tmp, index=False) if format == "csv" else table.to_parquet(tmp, index=False)
    except OSError as exc:
        raise FeatxError(f"cannot write {path} ({exc.strerror or exc}); choose a writable --output") from None
    log(f"exported {X.shape[0]} images x {X.shape[1]} features of {entry.name} to {path}")
    return path
