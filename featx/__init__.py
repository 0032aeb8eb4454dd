"""featx: run a frozen CNN once, cache per-layer activations in HDF5, run many fast experiments on them.

Stages, each importing only from those before it:
    sources -> backbones -> extractor (+ cache) -> features -> classifiers -> experiments / reports
"""

import importlib

__version__ = "0.1.0"

# Loaded on first use: the command line starts (and answers Ctrl-C) in milliseconds instead of after the
# seconds that h5py, pandas, scikit-learn and matplotlib take to import.
_API = {
    "Cache": "featx.cache.store",
    "CacheEntry": "featx.cache.store",
    "list_entries": "featx.cache.store",
    "open_entry": "featx.cache.store",
    "verify": "featx.cache.verify",
    "extract": "featx.extractor",
    "load": "featx.features.load",
    **{
        name: "featx.experiments"
        for name in ("Evaluation", "FitSpec", "compare", "fit", "load_model", "predict", "run_pipeline", "runs", "tsne")
    },
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'featx' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
