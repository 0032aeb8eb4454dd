"""A small real cache entry written by the store itself (Cache.create, CacheEntry.write_layer), as extract writes one,
without TensorFlow: for tests of the cache layout and of reading features that need no backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featx.cache.key import cache_key
from featx.cache.manifest import EntryManifest
from featx.cache.store import Cache, CacheEntry
from featx.sources.views import IDENTITY

LAYER, WIDTH, N = "stem/conv 1", 4, 6  # a layer name that must be quoted in a file name
OTHER, OTHER_WIDTH = "head", 3  # a second, deeper layer
CLASSES = ["good", "bad"]
LABELS = np.array([0, 1, 0, 1, 0, 1])
SPLIT = np.array(["train", "train", "val", "val", "test", "test"])


def make_entry(root: Path, views=("hflip", "crop2"), pool: str = "avg") -> CacheEntry:
    """An entry of N images with layers LAYER and OTHER (in that depth order) cached for the identity and `views`;
    its features are distinct per layer, view and pool. Entries of other pools hold the same images."""
    offset = 100.0 * ("avg", "max", "gem").index(pool)
    layers = {
        name: {
            view: np.arange(N * width, dtype=np.float32).reshape(N, width) + 10 * i + (width == OTHER_WIDTH) + offset
            for i, view in enumerate((IDENTITY, *views))
        }
        for name, width in ((LAYER, WIDTH), (OTHER, OTHER_WIDTH))
    }
    return write_entry(root, layers, LABELS, SPLIT, pool=pool)


def write_entry(
    root: Path, layers: dict, labels, split, *, classes=CLASSES, valid=None, pool="avg", description="tiny test data"
) -> CacheEntry:
    """An entry of len(labels) images whose layers are `layers` {name: {view: rows of shape (n, width)}}, in depth
    order as given; valid : which images decoded (default all; the others are recorded as not images)."""
    n = len(labels)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    relpaths, fingerprints = [f"img{i}.png" for i in range(n)], [f"f{i}" for i in range(n)]
    settings = {
        "backbone": "tiny_net",
        "weights_id": "w0",
        "pool": pool,
        "dtype": "float32",
        "input_size": [8, 8],
        "preprocessing": "none",
    }
    widths = {name: next(iter(views.values())).shape[1] for name, views in layers.items()}
    layer_info = {
        name: {"kind": "dense", "output_shape": [width], "n_features": width, "block": depth}
        for depth, (name, width) in enumerate(widths.items())
    }
    if LAYER in layer_info:
        layer_info[LAYER].update(kind="conv", output_shape=[2, 2, widths[LAYER]])
    manifest = EntryManifest(
        key=cache_key(settings, relpaths, fingerprints, np.asarray(labels)),
        settings=settings,
        layer_info=layer_info,
        class_names=list(classes),
        backbone_args={"name": "tiny_net", "weights": "none", "preprocess": None},
        description=description,
    )
    data = {
        "paths": np.array(relpaths),
        "labels": np.asarray(labels),
        "fingerprints": np.array(fingerprints),
        "split": np.asarray(split),
        "valid": valid,
        "errors": np.array(["" if ok else "not an image file Pillow can read" for ok in valid]),
    }
    entry = Cache(root).create(manifest, data)
    for name, views in layers.items():
        for view, rows in views.items():
            rows = np.asarray(rows, np.float32)
            entry.write_layer(
                name, lambda start, stop, rows=rows: rows[start:stop], n, rows.shape[1], np.float32, {}, view=view
            )
    return CacheEntry(entry.path)
