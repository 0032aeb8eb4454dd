"""Downstream classifiers on cached features: the registry and the Keras dense head."""

from featx.classifiers.registry import (
    BASELINES,
    CLASSIFIERS,
    make_classifier,
    make_pipeline,
    parse_param_values,
)

__all__ = [
    "BASELINES",
    "CLASSIFIERS",
    "DenseHeadClassifier",
    "make_classifier",
    "make_pipeline",
    "parse_param_values",
]


def __getattr__(name):
    # DenseHeadClassifier is loaded on first use: importing keras costs seconds that the
    # classical classifiers should not pay.
    if name == "DenseHeadClassifier":
        from featx.classifiers.dense import DenseHeadClassifier

        return DenseHeadClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
