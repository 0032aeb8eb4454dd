"""featx: run a frozen CNN once, cache per-layer activations in HDF5, run many fast experiments on them.

Stages, each importing only from those before it:
    sources -> backbones -> extractor (+ cache) -> features -> classifiers -> experiments / reports
"""

from featx import runtime  # noqa: F401  (sets TensorFlow's CPU environment before anything imports it)
from featx.cache.store import Cache, CacheEntry, list_entries, open_entry
from featx.cache.verify import verify
from featx.extractor import extract
from featx.features.load import load

__version__ = "0.1.0"

__all__ = ["Cache", "CacheEntry", "compare", "extract", "fit", "list_entries", "load", "open_entry", "predict", "run_pipeline",
           "runs", "verify"]
_EXPERIMENTS = ("compare", "fit", "predict", "run_pipeline", "runs")


def __getattr__(name):
    # Experiments import scikit-learn and matplotlib (seconds): loaded on first use, not for `featx ls`.
    if name in _EXPERIMENTS:
        from featx import experiments

        return getattr(experiments, name)
    raise AttributeError(f"module 'featx' has no attribute {name!r}")
