"""featx: run a frozen CNN once, cache per-layer activations in HDF5, run many fast experiments on them.

Stages, each importing only from those before it:
    sources -> backbones -> extractor (+ cache) -> features -> classifiers -> experiments / reports
"""

from featx import runtime  # noqa: F401  (sets TensorFlow's CPU environment before anything imports it)
from featx.cache.store import CacheEntry, list_entries, open_entry
from featx.extractor import extract
from featx.features.load import load

__version__ = "0.1.0"

__all__ = ["CacheEntry", "extract", "list_entries", "load", "open_entry"]
