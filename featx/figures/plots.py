"""Figures for experiment reports, written as PNG files.

Each `plot_*` function draws one figure, saves it to `path` (creating parent folders) and returns `path`; the
`*_figure` function of the same name returns that Figure unsaved (what tests inspect against the numbers it
shows). Figures are matplotlib objects on their own Agg canvas, not pyplot figures: no backend is chosen for the
process (a notebook keeps its own) and nothing stays registered after a long sweep.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler

from featx.errors import FeatxError

ANNOTATE_MAX_CLASSES = 30
COMBINED_LINESTYLES = ("--", ":", "-.")


def plot_confusion(confusion_df, path, title):
    """confusion_figure(...) saved as a PNG at `path`; returns `path`."""
    return _save(confusion_figure(confusion_df, title), path)


def confusion_figure(confusion_df, title) -> Figure:
    """Confusion matrix: colors are the share of each true class (readable when classes are
    imbalanced), numbers are counts (and that share, up to 12 classes).

    confusion_df : DataFrame of shape (n_classes, n_classes), rows true, columns predicted
        (as returned by featx.selection.metrics.evaluate).
    """
    counts = confusion_df.to_numpy()
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    n = len(confusion_df)
    side = max(4.0, 0.5 * n + 2)
    fig, ax = _subplots(figsize=(side + 1, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(confusion_df.columns, rotation=45, ha="right")
    ax.set_yticklabels(confusion_df.index)
    if n <= ANNOTATE_MAX_CLASSES:
        fontsize = 13 if n <= 5 else 10 if n <= 12 else 7  # counts as large as the cells allow
        for (i, j), count in np.ndenumerate(counts):
            color = "white" if shares[i, j] > 0.5 else "black"
            text = f"{count:,}\n{shares[i, j]:.0%}" if n <= 12 else f"{count:,}"  # the share: what the color says
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize, linespacing=1.1)
    return fig


def plot_learning_curves(history_df, path):
    """learning_curves_figure(...) saved as a PNG at `path`; returns `path`."""
    return _save(learning_curves_figure(history_df), path)


def learning_curves_figure(history_df) -> Figure:
    """Loss and accuracy per epoch, train vs validation, with the best epoch marked.

    history_df : DataFrame with columns epoch, loss, accuracy, val_loss, val_accuracy
        (DenseHeadClassifier.history_). The best epoch is the first with the highest
        val_accuracy, the one whose weights the classifier keeps.
    """
    best = history_df.loc[history_df["val_accuracy"].idxmax(), "epoch"]
    fig, axes = _subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(history_df["epoch"], history_df[metric], label="train")
        ax.plot(history_df["epoch"], history_df[f"val_{metric}"], label="val")
        ax.axvline(best, color="gray", linestyle="--", label=f"best epoch ({best})")
        ax.set(xlabel="epoch", ylabel=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    return fig


def plot_layer_comparison(results_df, path, metric="test_accuracy", x="layers", hue="classifier"):
    """layer_comparison_figure(...) saved as a PNG at `path`; returns `path`."""
    return _save(layer_comparison_figure(results_df, metric, x, hue), path)


def layer_comparison_figure(results_df, metric="test_accuracy", x="layers", hue="classifier") -> Figure:
    """Compare a metric across layer subsets, one series per classifier.

    results_df : DataFrame, one row per run, with columns `x` (layer subset name), `hue`
        (classifier name) and `metric`; repeated runs (e.g. seeds) are averaged and their
        std drawn as error bars. With a `depth` column, rows with a depth are drawn as a
        curve over depth (layer names as ticks) and rows without one (combined subsets such
        as all layers) as horizontal reference lines; without it, as grouped bars.
    """
    missing = {x, hue, metric} - set(results_df.columns)
    if missing:
        raise FeatxError(
            f"results have no column(s) {', '.join(sorted(missing))}; "
            f"available: {', '.join(map(str, results_df.columns))}."
        )
    fig, ax = _subplots(figsize=(max(6.0, 0.5 * results_df[x].nunique() + 3), 4.5))
    if "depth" in results_df.columns:
        _depth_lines(ax, results_df, metric, x, hue)
    else:
        _grouped_bars(ax, results_df, metric, x, hue)
    ax.set(ylabel=metric, title=f"{metric} by layer subset")
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def plot_tsne(X, y, class_names, path, seed=0, max_points=2000, title=None):
    """tsne_figure(...) saved as a PNG at `path`; returns `path`."""
    return _save(tsne_figure(X, y, class_names, seed, max_points, title), path)


def tsne_figure(X, y, class_names, seed=0, max_points=2000, title=None) -> Figure:
    """2-D t-SNE of features, colored by class.

    X : ndarray of shape (n_samples, n_features); y : ndarray of shape (n_samples,) of
    class indices into class_names. At most `max_points` random samples are embedded
    (t-SNE is quadratic); they are standardized and reduced to 50 PCA components first,
    the usual way to make t-SNE on wide features fast and less noisy.
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), max_points, replace=False))
        X, y = X[keep], y[keep]
    X = StandardScaler().fit_transform(X)
    X = PCA(n_components=min(50, *X.shape), random_state=seed).fit_transform(X)
    embedding = TSNE(
        n_components=2, perplexity=min(30.0, (len(X) - 1) / 3), init="pca", random_state=seed
    ).fit_transform(X)
    colors = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    fig, ax = _subplots(figsize=(8, 6))
    for index, name in enumerate(class_names):
        points = embedding[y == index]
        ax.scatter(points[:, 0], points[:, 1], s=6, color=colors(index % colors.N), label=name)
    ax.set(xticks=[], yticks=[], title=title or f"t-SNE of {len(X)} samples")
    ax.legend(markerscale=3, fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def _grouped_bars(ax, results_df, metric, x, hue):
    stats = results_df.groupby([x, hue], sort=False)[metric].agg(["mean", "std"])
    order = {"index": results_df[x].unique(), "columns": results_df[hue].unique()}
    means = stats["mean"].unstack(hue).reindex(**order)
    spreads = stats["std"].unstack(hue).reindex(**order).fillna(0)
    positions, width = np.arange(len(means)), 0.8 / len(means.columns)  # drawn here: pandas' .plot picks a backend
    for i, name in enumerate(means.columns):
        offset = (i - (len(means.columns) - 1) / 2) * width
        ax.bar(positions + offset, means[name], width, yerr=spreads[name], capsize=2, label=str(name))
    ax.set_xticks(positions, labels=[str(v) for v in means.index], rotation=45)
    ax.set_xlabel(x)


def _depth_lines(ax, results_df, metric, x, hue):
    colors = {name: f"C{i}" for i, name in enumerate(results_df[hue].unique())}
    per_layer = results_df[results_df["depth"].notna()]
    for name, runs in per_layer.groupby(hue, sort=False):
        curve = runs.groupby("depth")[metric].agg(["mean", "std"]).fillna(0)
        ax.errorbar(
            curve.index,
            curve["mean"],
            yerr=curve["std"],
            marker="o",
            color=colors[name],
            label=name,
        )
    ticks = per_layer.drop_duplicates("depth").sort_values("depth")
    ax.set_xticks(ticks["depth"], labels=ticks[x], rotation=45, ha="right")
    ax.set_xlabel("layer (by depth)")
    combined = results_df[results_df["depth"].isna()]
    styles = {
        subset: COMBINED_LINESTYLES[i % len(COMBINED_LINESTYLES)] for i, subset in enumerate(combined[x].unique())
    }
    for (name, subset), value in combined.groupby([hue, x], sort=False)[metric].mean().items():
        ax.axhline(
            value,
            color=colors[name],
            linestyle=styles[subset],
            linewidth=1,
            label=f"{name}: {subset}",
        )


def _subplots(nrows=1, ncols=1, figsize=None):
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols)


def _save(fig, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
