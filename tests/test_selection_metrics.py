"""featx.selection.metrics: scores, the confusion table and their errors, on predictions for scikit-learn's digits."""

import pytest

from featx.selection.metrics import evaluate

from helpers import CLASS_NAMES


def test_evaluate(digits_predictions):
    _, y_true, y_pred = digits_predictions
    scores = evaluate(y_true, y_pred, CLASS_NAMES)
    confusion = scores["confusion"]
    assert confusion.shape == (10, 10) and list(confusion.index) == CLASS_NAMES
    assert confusion.to_numpy().sum() == len(y_true)
    assert confusion.to_numpy().trace() == (y_true == y_pred).sum()
    assert scores["accuracy"] == pytest.approx((y_true == y_pred).mean())  # a count: exact up to the division
    assert 0.9 < scores["f1_macro"] <= 1 and 0.9 < scores["f1_weighted"] <= 1  # a floor on the fixture's model
    assert scores["report"]["digit 3"]["support"] == (y_true == 3).sum()


def test_evaluate_keeps_shape_when_a_class_is_missing(digits_predictions):
    _, y_true, y_pred = digits_predictions
    present = y_true != 9
    scores = evaluate(y_true[present], y_pred[present], CLASS_NAMES)
    assert scores["confusion"].shape == (10, 10)
    assert scores["confusion"].loc["digit 9"].sum() == 0
    assert scores["confusion"].to_numpy().sum() == present.sum()
