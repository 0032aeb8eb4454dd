"""Experiments on cached features: fit, compare, the runs log, declarative pipelines, t-SNE and predict.

Each name is imported from its module on first use, so a command imports only the experiment it runs (the
command line builds its parser without scikit-learn, pandas or matplotlib).
"""

import importlib
import sys
import types

_API = {
    "compare": "compare",
    "parse_grid": "compare",
    **dict.fromkeys(("FitResult", "Scores", "fit", "record_run", "train_and_score"), "fit"),
    **dict.fromkeys(("FitSpec", "Evaluation", "spec_hash"), "spec"),
    "read_pipeline": "pipelines",
    "run_pipeline": "pipelines",
    "predict": "predict",
    "load_model": "export_model",  # a run id (models.load_model) or an exported model's path
    "runs": "runs",
    "tsne": "tsne",
}

__all__ = sorted(_API)


class _Package(types.ModuleType):
    """featx.experiments.fit is the function fit, whether or not the module featx.experiments.fit was imported
    first (the import system sets a submodule as an attribute of its package; here the function of that name
    wins, as when this package imported every module eagerly)."""

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __getattr__(self, name):
        if name in _API:
            value = getattr(importlib.import_module(f"featx.experiments.{_API[name]}"), name)
            super().__setattr__(name, value)
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__(self):
        return sorted([*super().__dir__(), *_API])


sys.modules[__name__].__class__ = _Package
