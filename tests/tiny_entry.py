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
    relpaths, fingerprints = [f"img{i}.png" for i in range(N)], [f"f{i}" for i in range(N)]
    settings = {
        "backbone": "tiny_net",
        "weights_id": "w0",
        "preprocessing": "none",
        "pool": pool,
        "dtype": "float32",
        "input_size": [8, 8],
    }
    layer_info = {
        LAYER: {"kind": "conv", "output_shape": [2, 2, WIDTH], "n_features": WIDTH, "block": 0},
        OTHER: {"kind": "dense", "output_shape": [OTHER_WIDTH], "n_features": OTHER_WIDTH, "block": 1},
    }
    manifest = EntryManifest(
        key=cache_key(settings, relpaths, fingerprints, LABELS),
        settings=settings,
        layer_info=layer_info,
        class_names=list(CLASSES),
        backbone_args={"name": "tiny_net", "weights": "none", "preprocess": None},
        description="tiny test data",
    )
    data = {
        "paths": np.array(relpaths),
        "labels": LABELS,
        "fingerprints": np.array(fingerprints),
        "split": SPLIT,
        "valid": np.ones(N, bool),
        "errors": np.array([""] * N),
    }
    entry = Cache(root).create(manifest, data)
    offset = 100.0 * ("avg", "max", "gem").index(pool)
    for i, view in enumerate((IDENTITY, *views)):
        for name, width in ((LAYER, WIDTH), (OTHER, OTHER_WIDTH)):
            rows = np.arange(N * width, dtype=np.float32).reshape(N, width) + 10 * i + (width == OTHER_WIDTH) + offset
            entry.write_layer(
                name, lambda start, stop, rows=rows: rows[start:stop], N, width, np.float32, {}, view=view
            )
    return CacheEntry(entry.path)
