"""Downstream classifiers on cached features: the registry (featx.classifiers.registry), the Keras dense head and
the tail with the scikit-learn API, the view ensemble, and the flags the command line offers (featx.classifiers.flags).

The registry's names are loaded on first use, so the command line can read featx.classifiers.flags without
importing scikit-learn; importing keras costs seconds that the classical classifiers should not pay either.
"""

import importlib

_API = {
    **dict.fromkeys(
        ("BASELINES", "CLASSIFIERS", "classifier_params", "fit_pipeline", "make_classifier", "make_pipeline"),
        "featx.classifiers.registry",
    ),
    "DenseHeadClassifier": "featx.classifiers.dense",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
