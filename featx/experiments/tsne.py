"""t-SNE of one layer subset: does the backbone already separate the classes at this depth?"""

from __future__ import annotations

import re
from pathlib import Path

from featx.cache import safepath
from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.features.load import load
from featx.figures.plots import plot_tsne
from featx.progress import silent
from featx.runs.folders import writable_folder

POINTS = (2, 100_000)  # max_points: t-SNE needs two points; beyond 100,000 it runs for hours on a CPU


def tsne(
    entry=None,
    layers="top_activation",
    *,
    split: str | None = None,
    seed: int = 0,
    max_points: int = 2000,
    cache=None,
    log=print,
) -> Path:
    """Plot a 2-D t-SNE of `layers` (names or groups) of `entry` (of `cache`) colored by class; returns the PNG path,
    `tsne_path`, in the cache's reports folder (its runs_dir's, for a read-only cache). split : None = every valid
    image."""
    log = log or silent
    low, high = POINTS
    if isinstance(max_points, bool) or not isinstance(max_points, int) or not low <= max_points <= high:
        raise FeatxError(f"--max-points {max_points} must be a whole number from {low} to {high:,}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise FeatxError(f"--seed {seed} must be a whole number from 0 to {2**32 - 1:,}")
    entry = Cache.resolve(cache).open(entry)
    path = tsne_path(entry, layers=layers, split=split, seed=seed, max_points=max_points)
    features = load(entry, layers=layers, split=split)  # unusable features: one line, no reports folder made
    X, y = features.X, features.y
    if len(X) < low:
        raise FeatxError(
            f"cache entry {entry.name} ({entry.data_label}) has {len(X)} decoded image(s)"
            f"{f' in split {split}' if split else ''}; a t-SNE needs at least {low} (`featx info` lists the "
            "files that could not be decoded)"
        )
    safepath.check_write(writable_folder(path.parent, "reports"), path)  # a link of the plot's name: refused
    path = plot_tsne(
        X,
        y,
        entry.class_names,
        path,
        seed,
        max_points,
        title=f"t-SNE of {entry.settings['backbone']} {features.selection.spec} ({min(len(X), max_points)} "
        f"{split + ' ' if split else ''}images, {X.shape[1]} features)",
    )
    log(f"saved {path}")
    return path


def tsne_path(entry, *, layers, split=None, seed: int = 0, max_points: int = 2000) -> Path:
    """<reports>/tsne-<entry>-<layers>[-<split>][-seed<S>][-max<M>].png: everything that decides the plot is
    in its name (non-default seed and max_points included), so an existing file is that very plot."""
    parts = [
        f"tsne-{entry.name}-{_label(layers)}",
        split,
        seed and f"seed{seed}",
        max_points != 2000 and f"max{max_points}",
    ]
    name = re.sub(r"[^\w.,-]+", "_", "-".join(str(p) for p in parts if p))[:150]
    return entry.cache.reports_dir / f"{name}.png"


def _label(layers) -> str:
    return layers if isinstance(layers, str) else ",".join(layers)


def tsne_plots(entry) -> list[Path]:
    """Every t-SNE plot drawn of `entry` (tsne_path's files), newest first."""
    prefix = re.sub(r"[^\w.,-]+", "_", f"tsne-{entry.name}-")
    found = [p for p in entry.cache.reports_dir.glob("tsne-*.png") if p.name.startswith(prefix) and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
