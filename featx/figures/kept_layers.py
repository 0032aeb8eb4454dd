"""Which layers did the work: the features a group-lasso selection kept, per layer in depth order (CSV and PNG)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

KEPT_CSV, KEPT_PNG = "kept_per_layer.csv", "kept_per_layer.png"


def kept_table(selector) -> pd.DataFrame:
    """One row per layer in depth (column) order: layer, features, kept, share kept.

    selector : a fitted featx.features.head2toe.GroupLassoSelector with blocks.
    """
    widths = {str(name): int(width) for name, width in selector.blocks}
    kept = selector.kept_per_layer()
    table = pd.DataFrame({"layer": list(kept), "features": [widths[n] for n in kept], "kept": list(kept.values())})
    table["share_kept"] = (table["kept"] / table["features"]).round(4)
    return table


def plot_kept_per_layer(table: pd.DataFrame, path, title: str = "features kept per layer") -> Path:
    """kept_per_layer_figure(...) saved as a PNG at `path`; returns `path`."""
    fig = kept_per_layer_figure(table, title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return Path(path)


def kept_per_layer_figure(table: pd.DataFrame, title: str = "features kept per layer") -> Figure:
    """Bar plot of table's kept column, one bar per layer, shallowest left; matplotlib objects, no pyplot."""
    fig = Figure(figsize=(max(6.0, 0.18 * len(table) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(range(len(table)), table["kept"], color="tab:blue")
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels(table["layer"], rotation=90, fontsize=6 if len(table) > 30 else 8)
    ax.set_ylabel("features kept")
    ax.set_xlabel("layer (depth order)")
    ax.set_title(f"{title}: {int(table['kept'].sum())} of {int(table['features'].sum())}")
    return fig


def write_kept_layers(pipeline, folder, plots: bool = True) -> pd.DataFrame | None:
    """In a run folder: kept_per_layer.csv (and .png with plots) when the pipeline has a fitted selection step
    with the layer layout; None (nothing written) otherwise."""
    from featx.features.head2toe import selector_of

    selector = selector_of(pipeline)
    if selector is None or selector.blocks is None:
        return None
    table = kept_table(selector)
    table.to_csv(Path(folder) / KEPT_CSV, index=False)
    if plots:
        plot_kept_per_layer(table, Path(folder) / KEPT_PNG)
    return table
