"""Every figure featx draws says what its numbers say: each is inspected as a matplotlib Figure (not as pixels)
against the table it was drawn from: the layer comparison's points, ticks and star under any column order, the
per-depth curves, the search curve's chosen point, confusion matrices, t-SNE colours, training curves' best
epoch and Head2Toe's kept layers. The HTML report's ranking table says what results.csv says."""

from __future__ import annotations

import importlib
import itertools
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from tiny_entry import LAYER, OTHER, write_entry

from featx.errors import FeatxError
from featx.figures.kept_layers import kept_per_layer_figure, kept_table
from featx.figures.plots import (
    confusion_figure,
    layer_comparison_figure,
    learning_curves_figure,
    plot_confusion,
    plot_layer_comparison,
    plot_learning_curves,
    plot_tsne,
    tsne_figure,
)
from featx.figures.selection_plots import layer_scores_figure, search_curve_figure
from featx.selection.metrics import evaluate

from helpers import CLASS_NAMES, cli

SCORE, CI = "cv_accuracy_mean", "cv_accuracy_ci95"


def _stars(ax) -> list:
    return [line for line in ax.get_lines() if line.get_marker() == "*"]


def _points(ax) -> dict:
    """{(tick label, model): (x, y)} of the layer comparison's error-bar points."""
    ticks = {round(t): label.get_text() for t, label in zip(ax.get_xticks(), ax.get_xticklabels())}
    points = {}
    for container in ax.containers:
        line = container.lines[0]
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            points[(ticks[round(x)], container.get_label())] = (x, y)
    return points


def _ticks(ax) -> list[str]:
    return [label.get_text() for label in ax.get_xticklabels()]


# a compare table as compare writes it, best first; drawn in depth order (the quickstart's case: the best row,
# logreg on top_activation, is last by depth and first in the table)
COMPARE = pd.DataFrame(
    [
        ("top_activation", "logreg", 0.81, 0.02),
        ("block6d_add", "logreg", 0.79, 0.03),
        ("top_activation", "rf", 0.78, 0.02),
        ("block4c_add", "logreg", 0.74, 0.04),
        ("block5c_add", "rf", 0.73, 0.03),
        ("block4c_add", "rf", 0.71, 0.02),
        ("block6d_add", "rf", 0.70, 0.03),
        ("block5c_add", "logreg", 0.69, 0.05),
        ("(baseline)", "majority", 0.55, 0.0),
        ("(baseline)", "stratified", 0.40, 0.04),
    ],
    columns=["layers", "model", SCORE, CI],
)
DEPTH_ORDER = ["block4c_add", "block5c_add", "block6d_add", "top_activation"]
ORDERS = [
    None,
    DEPTH_ORDER,
    DEPTH_ORDER[::-1],
    *map(list, itertools.islice(itertools.permutations(DEPTH_ORDER), 3, None, 5)),
]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "table" if o is None else ",".join(s[5:7] for s in o))
def test_the_layer_comparison_star_and_points_are_the_tables_under_any_column_order(order):
    fig = layer_scores_figure(COMPARE, SCORE, CI, hue="model", baselines=("majority", "stratified"), order=order)
    ax = fig.axes[0]
    drawn = _ticks(ax)
    assert drawn == (order or list(dict.fromkeys(COMPARE["layers"][:8])))  # the columns in the order asked for
    points = _points(ax)
    rows = COMPARE[~COMPARE["model"].isin(("majority", "stratified"))]
    assert len(points) == len(rows)
    for row in rows.itertuples():  # each tick's points carry the table's score of that subset and model
        assert points[(row.layers, row.model)][1] == pytest.approx(getattr(row, SCORE))
    [star] = _stars(ax)
    best = rows.iloc[0]
    assert star.get_label() == f"best: {best['model']} on {best['layers']}"
    assert (star.get_xdata()[0], star.get_ydata()[0]) == pytest.approx(points[(best["layers"], best["model"])])
    assert drawn[round(star.get_xdata()[0])] == best["layers"]  # the star stands on the best row's column
    baselines = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines() if "baseline" in line.get_label()}
    assert baselines == {"baseline majority: 0.550": 0.55, "baseline stratified: 0.400": 0.40}


def test_the_per_depth_curves_run_in_depth_order_with_the_tables_scores():
    depth = {"block4c_add": 40, "block5c_add": 60, "block6d_add": 90, "top_activation": 120}
    table = COMPARE.assign(depth=COMPARE["layers"].map(depth))
    table = pd.concat(
        [table, pd.DataFrame([{"layers": "blocks", "model": "rf", SCORE: 0.83, CI: 0.02, "depth": np.nan}])],
        ignore_index=True,
    )
    table = table.sample(frac=1, random_state=3)  # the table's order must not matter
    ax = layer_scores_figure(table, SCORE, CI, hue="model").axes[0]
    curves = {line.get_label(): line for line in ax.get_lines() if line.get_marker() == "o"}
    assert set(curves) == {"logreg", "rf"}
    for model, line in curves.items():
        rows = table[(table["model"] == model) & table["depth"].notna()].sort_values("depth")
        assert list(line.get_xdata()) == list(rows["depth"])  # in depth order
        assert list(line.get_ydata()) == pytest.approx(list(rows[SCORE]))
    assert [t for t in ax.get_xticks()] == sorted(depth.values())
    assert _ticks(ax) == sorted(depth, key=depth.get)  # each tick names the layer at its depth
    [combined] = [line for line in ax.get_lines() if line.get_label() == "rf: blocks"]
    assert combined.get_ydata()[0] == pytest.approx(0.83)
    [star] = _stars(ax)  # the best row (rf on blocks) has no depth: starred at the right edge, at its score
    assert star.get_label() == "best: rf on blocks" and star.get_ydata()[0] == pytest.approx(0.83)
    assert star.get_xdata()[0] > max(depth.values())  # right of every layer's column


def test_the_search_curves_star_is_the_chosen_point_on_its_line():
    rows = [
        {"stage": "grid", "C": c, "gamma": g, "accuracy": s, "accuracy_ci95": 0.02}
        for (c, g), s in zip(itertools.product([0.01, 0.1, 1, 10, 100], ["scale", 0.01]), np.linspace(0.6, 0.8, 10))
    ]
    curve = pd.DataFrame(
        [{"stage": "default", "C": 1.0, "gamma": "scale", "accuracy": 0.7, "accuracy_ci95": 0.0}] + rows
    )
    curve["best"] = False
    curve.loc[4, "best"] = True  # C=1, gamma=0.01: not the highest score, the point the search chose
    ax = search_curve_figure(curve, ["C", "gamma"], "accuracy").axes[0]
    [star] = _stars(ax)
    chosen = curve.loc[4]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == pytest.approx((chosen["C"], chosen["accuracy"]))
    assert star.get_label() == f"chosen: {chosen['accuracy']:.3f}"
    [own] = [line for line in ax.get_lines() if line.get_label() == "gamma=0.01"]
    assert (chosen["C"], chosen["accuracy"]) in set(zip(own.get_xdata(), own.get_ydata()))
    for label, line in (
        (f"gamma={g}", l) for g in ("scale", 0.01) for l in ax.get_lines() if l.get_label() == f"gamma={g}"
    ):
        group = curve[(curve["stage"] != "default") & (curve["gamma"].astype(str) == label[6:])].sort_values("C")
        assert list(line.get_xdata()) == list(group["C"]) and list(line.get_ydata()) == pytest.approx(group["accuracy"])
    [default] = [line for line in ax.get_lines() if line.get_label().startswith("defaults")]
    assert default.get_ydata()[0] == 0.7 and ax.get_xscale() == "log"


def test_a_confusion_matrix_has_true_rows_predicted_columns_and_the_splits_counts():
    names = ["mono", "poly", "defect"]
    y_true = np.array([0] * 5 + [1] * 3 + [2] * 4)
    y_pred = np.array([0, 0, 0, 1, 2, 1, 1, 0, 2, 2, 2, 1])
    matrix = evaluate(y_true, y_pred, names)["confusion"]
    assert matrix.loc["mono", "poly"] == 1 and matrix.loc["poly", "mono"] == 1  # rows true, columns predicted
    ax = confusion_figure(matrix, "t").axes[0]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("true", "predicted")
    assert [t.get_text() for t in ax.get_yticklabels()] == names == _ticks(ax)
    counts = np.zeros((3, 3), int)
    for text in ax.texts:
        x, y = text.get_position()
        counts[int(y), int(x)] = int(text.get_text().split("\n")[0].replace(",", ""))
    assert (counts == matrix.to_numpy()).all() and counts.sum() == len(y_true)
    shares = ax.get_images()[0].get_array()
    assert np.allclose(shares, matrix.to_numpy() / matrix.to_numpy().sum(axis=1, keepdims=True))
    assert all(t.get_text().endswith(f"{s:.0%}") for t, s in zip(ax.texts, shares.ravel()))


@pytest.mark.parametrize("max_points", [2000, 30])
def test_tsne_colours_one_class_each_with_its_count(max_points):
    counts = [5, 12, 30, 9]
    y = np.repeat(np.arange(4), counts)
    X = np.random.default_rng(0).normal(size=(len(y), 6)) + y[:, None]
    names = ["a", "b", "c", "d"]
    ax = tsne_figure(X, y, names, max_points=max_points).axes[0]
    drawn = {c.get_label(): c for c in ax.collections}
    assert list(drawn) == names
    sizes = {name: len(c.get_offsets()) for name, c in drawn.items()}
    if max_points >= len(y):
        assert sizes == dict(zip(names, counts))
    else:
        keep = np.sort(np.random.default_rng(0).choice(len(y), max_points, replace=False))  # tsne's own subsample
        assert sizes == dict(zip(names, np.bincount(y[keep], minlength=4).tolist()))
    colours = [tuple(c.get_facecolor()[0]) for c in drawn.values()]
    assert len(set(colours)) == len(names)  # one colour per class
    legend = {
        text.get_text(): to_rgba(handle.get_facecolor()[0])
        for text, handle in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)
    }
    assert legend == dict(zip(names, colours))


def test_the_training_curves_mark_the_best_val_epoch():
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4, 5, 6],
            "loss": [1.2, 0.9, 0.7, 0.6, 0.5, 0.45],
            "accuracy": [0.5, 0.6, 0.7, 0.75, 0.8, 0.85],
            "val_loss": [1.1, 0.95, 0.8, 0.82, 0.9, 1.0],
            "val_accuracy": [0.55, 0.62, 0.71, 0.71, 0.69, 0.66],  # best at epoch 3 (4 ties: the first is kept)
        }
    )
    fig = learning_curves_figure(history)
    for ax, metric in zip(fig.axes, ("loss", "accuracy")):
        [best] = [line for line in ax.get_lines() if line.get_label().startswith("best epoch")]
        assert list(best.get_xdata()) == [3, 3] and best.get_label() == "best epoch (3)"
        curves = {line.get_label(): line for line in ax.get_lines()}
        assert list(curves["train"].get_ydata()) == list(history[metric])
        assert list(curves["val"].get_ydata()) == list(history[f"val_{metric}"])
        assert list(curves["val"].get_xdata()) == list(history["epoch"])


def test_the_kept_layers_bars_are_the_selections_counts_in_depth_order():
    from featx.features.head2toe import GroupLassoSelector

    rng = np.random.default_rng(0)
    blocks = [["stem", 4], ["block1", 6], ["block2", 5]]
    X = rng.normal(size=(60, 15))
    y = (X[:, 4] + X[:, 5] > 0).astype(int)  # only block1 carries the label
    selector = GroupLassoSelector(fraction=0.2, blocks=blocks).fit(X, y)
    table = kept_table(selector)
    ax = kept_per_layer_figure(table).axes[0]
    assert _ticks(ax) == ["stem", "block1", "block2"] == list(table["layer"])
    assert [patch.get_height() for patch in ax.patches] == list(table["kept"])
    assert int(table["kept"].sum()) == int(selector.get_support().sum()) == 3
    assert ax.get_title() == "features kept per layer: 3 of 15"


def test_the_legacy_layer_comparison_draws_the_mean_of_each_subset_and_classifier():
    results = pd.DataFrame(
        {
            "layers": ["b", "a", "b", "a", "b", "a"],
            "classifier": ["rf", "rf", "svm", "svm", "rf", "svm"],
            "test_accuracy": [0.7, 0.6, 0.8, 0.5, 0.9, 0.7],
        }
    )
    ax = layer_comparison_figure(results).axes[0]
    assert _ticks(ax) == ["b", "a"]
    bars = {}
    for container in ax.containers:
        if hasattr(container, "patches"):
            for tick, patch in zip(_ticks(ax), container.patches):
                bars[(tick, container.get_label())] = patch.get_height()
    expected = results.groupby(["layers", "classifier"])["test_accuracy"].mean()
    assert bars == pytest.approx({(layers, clf): v for (layers, clf), v in expected.items()})
    depth = results.assign(depth=results["layers"].map({"a": 2, "b": 1}))
    ax = layer_comparison_figure(depth).axes[0]
    assert _ticks(ax) == ["b", "a"]  # by depth
    for container in ax.containers:
        line = container.lines[0]
        means = depth[depth["classifier"] == container.get_label()].groupby("depth")["test_accuracy"].mean()
        assert list(line.get_xdata()) == list(means.index) and list(line.get_ydata()) == pytest.approx(list(means))


# --- a real compare: its figure's star, and the HTML report against results.csv


class _Tables(HTMLParser):
    """Every <table> of a page as lists of cell texts, header row first."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A real `featx compare` of two layer sets given deepest first (so the table and depth orders differ) and two
    classifiers on a small entry; the layer comparison's Figure is kept as it is drawn."""
    compare_module = importlib.import_module("featx.experiments.compare")  # featx.experiments.compare: the verb

    drawn = []

    def keep(table, path, mean, ci=None, x="layers", hue="classifier", baselines=(), title=None, order=None):
        drawn.append((table.copy(), mean, layer_scores_figure(table, mean, ci, x, hue, baselines, title, order)))
        return original(table, path, mean, ci, x, hue, baselines, title, order)

    original = compare_module.plot_layer_scores
    tmp_path = tmp_path_factory.mktemp("compared")
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 30)
    split = np.repeat(["train", "val", "test"], [30, 16, 14])
    layers = {  # the deeper layer separates the classes better
        LAYER: {"id": rng.normal(size=(60, 4)) + 0.4 * labels[:, None]},
        OTHER: {"id": rng.normal(size=(60, 3)) + 1.2 * labels[:, None]},
    }
    entry = write_entry(tmp_path / "cache", layers, labels, split)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare_module, "plot_layer_scores", keep)
        rc, out, err = cli(
            *("compare", entry.path, "--cache-dir", tmp_path / "cache", "--layer-sets", OTHER, LAYER, "--cv", 3),
            *("--clf", "logreg,knn", "--param", "n_neighbors=5", "--n-jobs", 1, "--quiet"),
        )
    assert rc == 0, err
    [folder] = (tmp_path / "cache" / "reports").glob("compare-*")
    return folder, drawn[0]


def test_a_compare_figure_stars_the_best_row_of_its_results(compared):
    folder, (table, mean, fig) = compared
    results = pd.read_csv(folder / "results.csv")
    best = results[~results["classifier"].isin(("majority", "stratified"))].iloc[0]
    ax = fig.axes[0]
    [star] = _stars(ax)
    assert _ticks(ax)[round(star.get_xdata()[0])] == best["layers"]
    assert star.get_ydata()[0] == pytest.approx(best[mean])
    assert _ticks(ax) == [LAYER, OTHER]  # drawn by depth
    assert best["layers"] == OTHER and _ticks(ax).index(OTHER) == 1  # first in the table, second column


def test_the_html_reports_ranking_is_results_csv(compared):
    folder, _ = compared
    rc, out, err = cli("report", folder, "--cache-dir", folder.parents[1])
    assert rc == 0, err
    parser = _Tables()
    parser.feed((folder / "report.html").read_text(encoding="utf-8"))
    [ranking] = [t for t in parser.tables if t[0][:2] == ["#", "run"]]
    head, rows = ranking[0], ranking[1:]
    assert head[7] == "accuracy (selection)" and head[8] == "val accuracy"
    results = pd.read_csv(folder / "results.csv")
    assert [row[1] for row in rows] == list(results["run_id"])  # every row, in results.csv's order (best first)
    for row, r in zip(rows, results.to_dict("records")):
        baseline = r["classifier"] in ("majority", "stratified")
        assert row[2] == ("(baseline: ignores the features)" if baseline else r["layers"])
        assert row[3].removesuffix("recommended").removesuffix("baseline") == r["classifier"]
        assert row[4] == r["params"] and row[6] == f"{r['n_features']:.0f}"
        assert row[7] == f"{r['cv_accuracy_mean']:.3f} ± {r['cv_accuracy_ci95']:.3f}"
        assert row[8] == row[9] == f"{r['val_accuracy']:.3f}"
    assert rows[0][3] == results["classifier"][0] + "recommended"
    assert len(set(results["cv_accuracy_mean"])) > 2  # the scores differ: the order is a real one


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = open(path, "rb").read()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


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
