"""t-SNE of one layer subset: does the backbone already separate the classes at this depth?"""

from __future__ import annotations

import re
from pathlib import Path

from featx.cache.store import Cache
from featx.experiments.runs import writable_folder
from featx.features.load import load
from featx.reports import plot_tsne


def tsne(cache=None, *, layers="top_activation", split: str | None = None, seed: int = 0, max_points: int = 2000,
         cache_dir=None, runs_dir=None, log=print) -> Path:
    """Plot a 2-D t-SNE of `layers` (names or groups) colored by class; returns the PNG path
    (<cache_dir>/reports/tsne-<entry>-<layers>[-<split>].png). split : None = every valid image.
    runs_dir : write to <runs_dir>/reports instead (for a read-only cache)."""
    entry = Cache(cache_dir, runs_dir=runs_dir).open(cache)
    reports = writable_folder(entry.cache.reports_dir, "reports")
    X, y, meta = load(entry, layers=layers, split=split)
    label = meta.attrs["selection"].spec
    name = re.sub(r"[^\w.,-]+", "_", f"tsne-{entry.name}-{label}" + (f"-{split}" if split else ""))[:150]
    path = plot_tsne(X, y, entry.class_names, reports / f"{name}.png", seed, max_points,
                     title=f"t-SNE of {label} ({min(len(X), max_points)} {split + ' ' if split else ''}images, {X.shape[1]} features)")
    log(f"saved {path}")
    return path
