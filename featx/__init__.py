"""featx: run a frozen backbone once, cache per-layer activations in HDF5, run many fast experiments on them.

Stages, each importing only from those before it (tests/test_imports.py holds the code to it):
    sources -> backbones -> cache -> extractor -> features -> classifiers -> selection -> runs -> experiments
    -> report -> cli
The values a front door builds once: DataSpec (which images), BackboneSpec (which network, pooling and dtype),
FitSpec and Evaluation (what is fitted and how it is judged; fit_spec, compare_specs and tune_specs build them from
keywords), Compute (how wide and where to run) and the Cache (where everything lives).
"""

import importlib

__version__ = "0.1.0"

# Loaded on first use: the command line starts (and answers Ctrl-C) in milliseconds instead of after the
# seconds that h5py, pandas, scikit-learn and matplotlib take to import.
_API = {
    "Cache": "featx.cache.store",
    "CacheEntry": "featx.cache.store",
    "verify": "featx.cache.verify",
    "DataSpec": "featx.sources.spec",
    "BackboneSpec": "featx.backbones.spec",
    "Compute": "featx.compute",
    "extract": "featx.extractor",
    "load": "featx.features.load",
    **dict.fromkeys(("FitSpec", "Evaluation", "fit_spec", "compare_specs", "tune_specs"), "featx.selection.spec"),
    "fit": "featx.experiments.fit",
    "compare": "featx.experiments.compare",
    "tune": "featx.experiments.tune",
    "predict": "featx.experiments.predict",
    "export_model": "featx.experiments.export_model",
    "tsne": "featx.experiments.tsne",
    "run_pipeline": "featx.experiments.pipelines",
    "list_runs": "featx.runs.listing",
    "RunFilter": "featx.runs.listing",
    "load_model": "featx.experiments.export_model",  # a run id, or the path of a model export-model wrote
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'featx' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
