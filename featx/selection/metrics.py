"""Metrics: the selection metrics by name, one-call scoring of predictions, the default ranking metric, and the
full evaluation of a split (classification report and confusion matrix) that a run records."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, classification_report, confusion_matrix, f1_score

from featx.errors import FeatxError
from featx.selection.spec import METRIC_NAMES

METRICS = dict(
    zip(
        METRIC_NAMES,
        (  # the metrics named in featx.selection.spec.METRIC_NAMES, in that order
            accuracy_score,
            balanced_accuracy_score,
            partial(f1_score, average="macro", zero_division=0),
            partial(f1_score, average="weighted", zero_division=0),
        ),
        strict=True,
    )
)


IMBALANCE_RATIO = 1.5  # beyond this largest:smallest class ratio, plain accuracy rewards predicting the big class


SELECTION_SPLITS = ("train", "val")  # the rows model selection may use; "test" is scored once, afterwards


def score(y_true, y_pred) -> dict[str, float]:
    """Every metric of METRICS for one set of predictions.

    y_true, y_pred : ndarray of shape (n_samples,), class indices.
    """
    return {name: float(metric(y_true, y_pred)) for name, metric in METRICS.items()}


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise FeatxError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    return metric


def default_metric(y) -> tuple[str, str]:
    """The ranking metric for labels `y` and a one-line reason to print.

    Balanced accuracy when the largest class outnumbers the smallest by more than 1.5:1 (plain accuracy
    would then rank a classifier that ignores the small classes high), else accuracy.
    y : ndarray of shape (n_samples,), class indices (pass the selection rows, not test).
    """
    counts = np.unique(np.asarray(y), return_counts=True)[1]
    ratio = counts.max() / counts.min()
    if ratio > IMBALANCE_RATIO:
        return "balanced_accuracy", (
            f"ranking by balanced_accuracy: classes are imbalanced {ratio:.1f}:1 "
            f"(largest:smallest, beyond {IMBALANCE_RATIO}:1)"
        )
    return "accuracy", f"ranking by accuracy: classes are balanced within {IMBALANCE_RATIO}:1 ({ratio:.2f}:1)"


def evaluate(y_true, y_pred, class_names):
    """Accuracy, F1, per-class report and confusion matrix.

    y_true, y_pred : ndarray of shape (n_samples,), integer class indices into class_names.
    class_names : sequence of str of length n_classes.

    Every class in class_names is scored even when a split lacks it, so shapes match across
    splits; such a class counts as F1 0 in f1_macro (as in report's "macro avg").

    Returns dict with accuracy, balanced_accuracy, f1_weighted, f1_macro (floats), report (the output_dict of
    sklearn's classification_report) and confusion (DataFrame of shape
    (n_classes, n_classes), rows = true class, columns = predicted class).
    """
    labels = list(range(len(class_names)))
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "f1_weighted": _f1(y_true, y_pred, labels, "weighted"),
        "f1_macro": _f1(y_true, y_pred, labels, "macro"),
        "report": classification_report(
            y_true,
            y_pred,
            labels=labels,
            target_names=list(class_names),
            output_dict=True,
            zero_division=0,
        ),
        "confusion": pd.DataFrame(
            confusion,
            index=pd.Index(class_names, name="true"),
            columns=pd.Index(class_names, name="predicted"),
        ),
    }


def _f1(y_true, y_pred, labels, average):
    return float(f1_score(y_true, y_pred, labels=labels, average=average, zero_division=0))
