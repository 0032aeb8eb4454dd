"""Scores of one classifier on one split, in a form that is easy to save and compare."""

from __future__ import annotations

import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, classification_report, confusion_matrix, f1_score


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
