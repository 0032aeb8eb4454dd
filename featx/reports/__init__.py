"""Metrics and figures for downstream experiments."""

from featx.reports.metrics import evaluate
from featx.reports.plots import (
    plot_confusion,
    plot_layer_comparison,
    plot_learning_curves,
    plot_tsne,
)

__all__ = [
    "evaluate",
    "plot_confusion",
    "plot_layer_comparison",
    "plot_learning_curves",
    "plot_tsne",
]
