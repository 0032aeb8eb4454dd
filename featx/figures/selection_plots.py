"""Figures for model selection that show their uncertainty: scores with 95% CIs, the baseline, the best row.

Drawn with matplotlib's object API (no pyplot state, no backend switch). Each `*_figure` function returns the
Figure (what tests inspect: every point, tick and star against the table it was drawn from); each `plot_*`
function draws the same figure, saves it as PNG and returns the path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from featx.errors import FeatxError

MAX_TICK_LABELS = 30  # beyond this many layers, every k-th is labelled so the names stay readable
LABEL_CHARS = 28
BASELINE_STYLE = {"color": "0.4", "linestyle": "--", "linewidth": 1}


def plot_layer_scores(
    table,
    path,
    mean: str,
    ci: str | None = None,
    x: str = "layers",
    hue: str = "classifier",
    baselines=("majority", "stratified"),
    title: str | None = None,
    order=None,
):
    """layer_scores_figure(...) saved as a PNG at `path`; returns `path`."""
    return _save(layer_scores_figure(table, mean, ci, x, hue, baselines, title, order), path)


def layer_scores_figure(
    table,
    mean: str,
    ci: str | None = None,
    x: str = "layers",
    hue: str = "classifier",
    baselines=("majority", "stratified"),
    title: str | None = None,
    order=None,
) -> Figure:
    """A metric per layer subset and model, with 95% CI whiskers, baseline lines and the best row starred.

    table : DataFrame, one row per (subset, model), with columns `x`, `hue`, `mean` (e.g.
        "cv_balanced_accuracy_mean") and `ci` (its half-width, optional). Rows whose `hue` is in
        `baselines` are drawn as horizontal lines, not points. With a `depth` column, rows with a depth
        (compare's "each") form one curve per model over depth, and rows without one (combined subsets)
        horizontal reference lines; otherwise models are side-by-side points per subset.
    The metric axis is zoomed onto the data and says so when it does not start at 0. order : the `x` values
    in the order to draw them (e.g. by depth); others follow in table order.
    """
    missing = {x, hue, mean, *([ci] if ci else [])} - set(table.columns)
    if missing:
        raise FeatxError(
            f"results have no column(s) {', '.join(sorted(missing))}; available: {', '.join(table.columns)}"
        )
    table = table.assign(_ci=table[ci].fillna(0) if ci else 0.0)
    is_base = table[hue].isin(baselines)
    rows, base = table[~is_base], table[is_base]
    per_depth = "depth" in rows.columns and rows["depth"].notna().any()
    n_ticks = rows["depth"].nunique() if per_depth else rows[x].nunique()
    fig = Figure(figsize=(min(18.0, max(6.5, 0.28 * n_ticks + 4)), 4.8))
    ax = fig.add_subplot()
    colors = {name: f"C{i}" for i, name in enumerate(rows[hue].unique())}
    if per_depth:
        _depth_curves(ax, rows, mean, x, hue, colors)
    else:
        _dodged_points(ax, rows, mean, x, hue, colors, order)
    for name, group in base.groupby(hue, sort=False):
        value = group[mean].mean()
        ax.axhline(value, **BASELINE_STYLE, label=f"baseline {name}: {value:.3f}")
    if rows[mean].notna().any():
        _mark_best(ax, rows, mean, x, hue, per_depth, order)
    _zoom(ax, table, mean, mean.removeprefix("cv_").removesuffix("_mean"))
    ax.set_title(
        title or f"{mean.removeprefix('cv_').removesuffix('_mean')} by layer subset" + (" (95% CI)" if ci else "")
    )
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def plot_search_curve(curve, path, params, metric: str, title: str | None = None):
    """search_curve_figure(...) saved as a PNG at `path`; returns `path`."""
    return _save(search_curve_figure(curve, params, metric, title), path)


def search_curve_figure(curve, params, metric: str, title: str | None = None) -> Figure:
    """Selection score against the first searched parameter (log axis when it spans decades), one line per
    value of the others, CI band when there is one, the defaults as a dashed line and the chosen point starred.

    curve : DataFrame from featx.experiments.tune (columns stage, the params, metric, <metric>_ci95, best).
    params : the searched parameter names, the first on the x axis.
    """
    points = curve[curve["stage"] != "default"]
    x, others = params[0], list(params[1:])
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    series = points.groupby([points[o].astype(str) for o in others], sort=False) if others else [("", points)]
    for label, group in series:
        group = group.sort_values(x)
        name = ", ".join(f"{o}={v}" for o, v in zip(others, label if isinstance(label, tuple) else (label,)))
        line = ax.plot(group[x], group[metric], marker="o", markersize=4, label=name or metric)[0]
        band = group[f"{metric}_ci95"]
        if band.notna().all():
            ax.fill_between(group[x], group[metric] - band, group[metric] + band, color=line.get_color(), alpha=0.15)
    default = curve[curve["stage"] == "default"]
    if len(default):
        ax.axhline(default[metric].iloc[0], **BASELINE_STYLE, label=f"defaults: {default[metric].iloc[0]:.3f}")
    best = curve[curve["best"]].iloc[0]
    ax.plot(
        [best[x]],
        [best[metric]],
        marker="*",
        markersize=16,
        color="gold",
        markeredgecolor="black",
        linestyle="none",
        label=f"chosen: {best[metric]:.3f}",
    )
    values = points[x]
    numeric = values.dtype.kind in "iuf"  # a string axis (the tail's cut) is categorical
    if numeric and (values > 0).all() and values.max() / values.min() >= 100:
        ax.set_xscale("log")
    ax.set(xlabel=x, ylabel=metric, title=title or f"{metric} vs {x}")
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def _subsets(rows, x, order=None) -> list:
    """The x values in the order they are drawn: those of `order` first, in its order, then the others in table
    order (one rule for the points, their ticks and the star)."""
    present = list(rows[x].unique())
    return [s for s in (order or []) if s in present] + [s for s in present if s not in (order or [])]


def _dodged(rows, x, hue, subsets, name, value) -> float:
    """Where the point of model `name` on subset `value` is drawn: the subset's tick, offset by the model's slot."""
    names = list(rows[hue].unique())
    width = 0.7 / max(1, len(names))
    return subsets.index(value) + (names.index(name) - (len(names) - 1) / 2) * width


def _dodged_points(ax, rows, mean, x, hue, colors, order=None):
    subsets = _subsets(rows, x, order)
    for name, group in rows.groupby(hue, sort=False):
        where = [_dodged(rows, x, hue, subsets, name, s) for s in group[x]]
        ax.errorbar(where, group[mean], yerr=group["_ci"], fmt="o", capsize=3, color=colors[name], label=name)
    ax.set_xticks(
        range(len(subsets)),
        labels=[_short(s) for s in subsets],
        rotation=30 if len(subsets) > 3 else 0,
        ha="right" if len(subsets) > 3 else "center",
        fontsize=8,
    )
    ax.set_xlabel("layer subset")


def _depth_curves(ax, rows, mean, x, hue, colors):
    layers = rows[rows["depth"].notna()]
    for name, group in layers.groupby(hue, sort=False):
        group = group.sort_values("depth")
        ax.plot(group["depth"], group[mean], marker="o", markersize=3, color=colors[name], label=name)
        ax.fill_between(
            group["depth"], group[mean] - group["_ci"], group[mean] + group["_ci"], color=colors[name], alpha=0.15
        )
    ticks = layers.drop_duplicates("depth").sort_values("depth")
    step = math.ceil(len(ticks) / MAX_TICK_LABELS)
    ax.set_xticks(
        ticks["depth"].iloc[::step], labels=[_short(s) for s in ticks[x].iloc[::step]], rotation=90, fontsize=7
    )
    ax.set_xlabel("layer (by depth)" + (f", one label every {step} layers" if step > 1 else ""))
    combined = rows[rows["depth"].isna()]
    styles = (":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)))
    for i, ((name, subset), group) in enumerate(combined.groupby([hue, x], sort=False)):
        ax.axhline(
            group[mean].mean(),
            color=colors[name],
            linestyle=styles[i % len(styles)],
            linewidth=1,
            label=f"{name}: {_short(subset)}",
        )


def _mark_best(ax, rows, mean, x, hue, per_depth, order=None):
    best = rows.loc[rows[mean].idxmax()]
    if per_depth and not np.isnan(best.get("depth", np.nan)):
        where = best["depth"]
    elif per_depth:
        where = ax.get_xlim()[1]
    else:
        where = _dodged(rows, x, hue, _subsets(rows, x, order), best[hue], best[x])
    ax.plot(
        [where],
        [best[mean]],
        marker="*",
        markersize=16,
        color="gold",
        markeredgecolor="black",
        linestyle="none",
        label=f"best: {best[hue]} on {_short(best[x])}",
        zorder=5,
    )


def _zoom(ax, table, mean, name):
    low = float((table[mean] - table["_ci"]).min())
    high = float((table[mean] + table["_ci"]).max())
    pad = max(0.02, 0.08 * (high - low))
    low, high = max(0.0, low - pad), min(1.0, high + pad) if high <= 1 else high + pad
    ax.set_ylim(low, high)
    ax.set_ylabel(name + (" (axis zoomed, not from 0)" if low > 0 else ""))
    ax.grid(axis="y", alpha=0.3)


def _short(label) -> str:
    """Layer subset names fit a tick: a long comma list becomes 'first…+N layers'."""
    label = str(label)
    parts = label.split(",")
    if len(parts) > 2:
        return f"{parts[0]}…+{len(parts) - 1} layers"
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _save(fig, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
