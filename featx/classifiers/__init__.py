"""Downstream classifiers on cached features: the registry and the Keras dense head."""

from featx.classifiers.registry import (
    BASELINES,
    CLASSIFIERS,
    classifier_params,
    fit_pipeline,
    make_classifier,
    make_pipeline,
)

__all__ = [
    "BASELINES",
    "CLASSIFIERS",
    "DenseHeadClassifier",
    "classifier_params",
    "fit_pipeline",
    "make_classifier",
    "make_pipeline",
]


def __getattr__(name):
    # DenseHeadClassifier is loaded on first use: importing keras costs seconds that the
    # classical classifiers should not pay.
    if name == "DenseHeadClassifier":
        from featx.classifiers.dense import DenseHeadClassifier

        return DenseHeadClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
