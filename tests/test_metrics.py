"""Metrics and figures, on predictions for scikit-learn's digits."""

import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from featx.errors import FeatxError
from featx.figures.plots import plot_confusion, plot_layer_comparison, plot_learning_curves, plot_tsne
from featx.selection.metrics import evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = [f"digit {i}" for i in range(10)]


def assert_png(path):
    data = open(path, "rb").read()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def digits_predictions():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    model = LogisticRegression(max_iter=2000).fit(X_train / 16, y_train)
    return X_test, y_test, model.predict(X_test / 16)


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


@pytest.mark.slow
def test_plot_confusion_and_tsne(digits_predictions, tmp_path):
    X, y_true, y_pred = digits_predictions
    confusion = evaluate(y_true, y_pred, CLASS_NAMES)["confusion"]
    assert_png(plot_confusion(confusion, tmp_path / "sub" / "confusion.png", "logreg on digits"))
    path = plot_tsne(X, y_true, CLASS_NAMES, tmp_path / "tsne.png", max_points=300)
    assert_png(path)


def test_plot_learning_curves(tmp_path):
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "loss": [2.0, 1.0, 0.6, 0.4],
            "accuracy": [0.4, 0.7, 0.8, 0.9],
            "val_loss": [2.1, 1.2, 0.9, 1.1],
            "val_accuracy": [0.35, 0.6, 0.75, 0.7],
        }
    )
    assert_png(plot_learning_curves(history, tmp_path / "curves.png"))


def test_plot_layer_comparison_bars_and_depth(tmp_path):
    rows = [
        {
            "layers": layer,
            "classifier": clf,
            "seed": seed,
            "depth": depth,
            "test_accuracy": 0.5 + 0.1 * (depth or 4) + 0.01 * seed,
        }
        for clf in ("rf", "logreg")
        for seed in (0, 1)
        for layer, depth in (("block1", 1), ("block2", 2), ("block3", 3), ("all", None))
    ]
    results = pd.DataFrame(rows)
    assert_png(plot_layer_comparison(results.drop(columns="depth"), tmp_path / "bars.png"))
    assert_png(plot_layer_comparison(results, tmp_path / "depth.png"))
    with pytest.raises(FeatxError, match="f1_macro"):
        plot_layer_comparison(results, tmp_path / "x.png", metric="f1_macro")
