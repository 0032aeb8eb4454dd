"""Read a layer subset of a cache entry as (X, y, meta): the one way every experiment gets its features."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from featx.backbones.layers import LayerSelection, infos_from_metadata, layer_selection
from featx.cache.store import Cache, CacheEntry
from featx.errors import FeatxError
from featx.sources.splits import SPLITS


def select_cached(entry: CacheEntry, layers=None) -> LayerSelection:
    """The entry's LayerSelection: names and groups (all, blocks, final, fc) -> cached layers in depth order.

    Groups mean their cached members; None means every cached layer; a LayerSelection is checked against this
    entry and keeps its spec.
    """
    if layers is None:
        return LayerSelection(",".join(entry.layers), tuple(entry.layers))
    if isinstance(layers, LayerSelection):
        return replace(select_cached(entry, list(layers.names)), spec=layers.spec)
    return layer_selection(infos_from_metadata(entry.layer_info), layers, model_name=entry.settings["backbone"],
                           cached=entry.layers, entry_name=entry.name)


def load(cache=None, *, layers=None, split: str | None = None, cache_dir=None):
    """Features of the valid (decoded) images of a cache entry.

    cache : an entry (name, key prefix, folder or CacheEntry; None: the most recent) of the Cache at cache_dir.
    layers : names, groups, a comma list of them, or a LayerSelection; None: every cached layer. Layers are
        concatenated in the backbone's depth order, whatever order they are named in.

    Returns
    -------
    X : float ndarray of shape (n_samples, n_features)
    y : int ndarray of shape (n_samples,), indexes into meta.attrs["class_names"]
    meta : DataFrame with columns path, label, class_name, split (one row per sample); attrs hold
        class_names, selection (the LayerSelection read), layers (its names, a list), feature_slices
        {layer: (start, stop)}, cache_key, cache_path, settings.
    """
    entry = Cache(cache_dir).open(cache)
    selection = select_cached(entry, layers)
    rows = entry.valid.copy()
    if split is not None:
        if split not in SPLITS:
            raise FeatxError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
        rows &= entry.split == split
    rows = np.flatnonzero(rows)
    X, slices = entry.read(selection.names, rows)
    y = entry.labels[rows]
    meta = pd.DataFrame({
        "path": np.asarray(entry.relpaths, dtype=object)[rows],
        "label": y,
        "class_name": np.asarray(entry.class_names, dtype=object)[y],
        "split": entry.split[rows],
    })
    meta.attrs.update(class_names=entry.class_names, selection=selection, layers=list(selection.names),
                      feature_slices=slices, cache_key=entry.key, cache_path=str(entry.path), settings=entry.settings)
    return X, y, meta
