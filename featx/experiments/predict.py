"""predict: new images -> the run's backbone and layers -> the run's saved Pipeline -> labels and probabilities.

Features are computed exactly as the cache computed them: the backbone rebuilt from the run's cache entry
(refused if its weights changed), the same layers in the same depth order, the same pool and dtype.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from featx.cache.store import open_entry
from featx.errors import FeatxError
from featx.experiments.runs import load_model, runs_dir


def predict(run_id: str, paths, *, cache_dir=None, batch_size: int = 32, output=None, log=print) -> pd.DataFrame:
    """Classify image files (folders are searched recursively) with the model of run `run_id` (or a unique prefix).

    Returns a DataFrame with columns path, label (class name), error (why a file could not be decoded,
    else empty) and p_<class> per class where the classifier gives probabilities; also saved as CSV to
    `output` (default <cache_dir>/runs/<run_id>/predictions-<time>.csv).
    """
    from featx import runtime
    from featx.backbones import backbone_from_entry
    from featx.extractor import LayerExtractor
    from featx.sources.decode import load_rgb

    pipeline, run = load_model(run_id, cache_dir)
    entry = open_entry(runs_dir(cache_dir).parent / run["cache_entry"], cache_dir)
    if entry.key != run["cache_key"]:
        raise FeatxError(f"cache entry {entry.name} no longer has the key run {run['run_id']} was fitted on; fit again")
    files = _image_files([paths] if isinstance(paths, (str, Path)) else paths)
    runtime.configure_tensorflow()
    with runtime.compute_dtype(entry.settings.get("mixed_precision", False)):  # as the cached features were made
        backbone = backbone_from_entry(entry)
    layers = run["layer_names"].split(",")
    extractor = LayerExtractor(backbone, layers, entry.settings["pool"], entry.settings["dtype"])
    images, errors = {}, {}
    for path in files:
        try:
            images[path] = load_rgb(path, backbone.input_size)
        except ValueError as exc:
            errors[path] = str(exc)
    good, features = list(images), []
    for start in range(0, len(good), batch_size):
        outputs = extractor(np.stack([images[p] for p in good[start:start + batch_size]]))
        features.append(np.concatenate([outputs[n] for n in layers], axis=1))
    table = pd.DataFrame({"path": [str(p) for p in files], "label": "", "error": [errors.get(p, "") for p in files]})
    if good:
        X, rows = np.concatenate(features), table.index[table["error"] == ""]
        names = np.asarray(entry.class_names, dtype=object)
        table.loc[rows, "label"] = names[pipeline.predict(X)]
        if hasattr(pipeline, "predict_proba"):  # columns follow the classes seen in training
            for name, column in zip(names[pipeline.classes_], pipeline.predict_proba(X).T):
                table.loc[rows, f"p_{name}"] = column.round(4)
    output = Path(output or runs_dir(cache_dir) / run["run_id"] / f"predictions-{time.strftime('%Y%m%d-%H%M%S')}.csv")
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    log(table.to_string(index=False))
    log(f"saved {output}")
    return table


def _image_files(paths) -> list[Path]:
    """Files as given, and every non-hidden file under a folder (bad ones are reported at decode)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            files.append(path)
        else:
            raise FeatxError(f"'{path}' is not an image file or folder; pass existing paths to predict")
    if not files:
        raise FeatxError(f"no files found in {', '.join(map(str, paths))}; pass image files or folders of them")
    return files
