"""Deciding that an extract has nothing to do, from files alone: no TensorFlow import, no backbone build.

The cache key needs the backbone's weights hash, which only building the model gives. An entry made from
the same backbone arguments stores that hash in its settings, so the key of the current images under
those settings can be recomputed from the stored settings and the current file fingerprints: when it is
the entry's key, and every requested layer (groups resolved against the entry's stored layer info) is
cached with no pass pending and the same split, the run is a no-op. Anything else (no such entry, a
layer or group this entry cannot answer, a changed file) falls back to the full path, which builds the
backbone and decides for itself, so this check can only ever say "nothing to do" too rarely.
"""

from __future__ import annotations

import os
from pathlib import Path

from featx.backbones.layers import LayerSelection, infos_from_metadata, layer_selection
from featx.cache.key import cache_key
from featx.cache.layout import parse_entry_name
from featx.cache.passlog import PassLog
from featx.cache.store import Cache, CacheEntry
from featx.errors import FeatxError
from featx.sources.views import IDENTITY


def warm_entry(
    cache: Cache, backbone_args: dict, computed: dict, images, fingerprints: list[str], layers, views=(IDENTITY,)
) -> tuple[CacheEntry, LayerSelection] | None:
    """(entry, selection) when an entry already holds everything this extract asks for; None when the backbone
    must decide.

    backbone_args : {name, weights, input_size, preprocess, file_hashes}, as extract stores them.
    computed : the stored settings this run would compute without the model (pool, dtype, mixed_precision,
        decoder_version). images : the resolved ImageSet (subset and split applied). views : the view names
        that must be cached for every layer.
    """
    files = [p for p in (backbone_args["name"], backbone_args["weights"]) if isinstance(p, str) and os.path.isfile(p)]
    backbone = Path(str(backbone_args["name"])).stem  # the model's name (a saved model's: its file stem)
    for folder in cache.folders():
        if parse_entry_name(folder.name).backbone != backbone:  # another backbone's entry: skipped unread
            continue
        try:
            entry = CacheEntry(folder, cache)
        except FeatxError:  # RunFailed too
            continue
        selection = _serves(entry, backbone_args, computed, images, fingerprints, layers, views, files)
        if selection is not None:
            return entry, selection
    return None


def _serves(
    entry: CacheEntry, backbone_args, computed, images, fingerprints, layers, views, files
) -> LayerSelection | None:
    settings = entry.settings
    if entry.backbone_args != backbone_args or any(settings.get(k) != v for k, v in computed.items()):
        return None
    if any(os.path.getmtime(f) >= entry.manifest.created for f in files):
        return None  # a model or weights file changed since: only rebuilding it tells its new weights hash
    if cache_key(settings, images.relpaths, fingerprints, images.labels) != entry.key:
        return None
    if entry.split_differs(images):
        return None
    try:
        selection = layer_selection(
            infos_from_metadata(entry.layer_info), layers, model_name=settings["backbone"], pool=settings["pool"]
        )
        cached = all(set(selection.names) <= set(entry.view_layers(view)) for view in views)
        return selection if cached and PassLog.summary(entry) is None else None
    except FeatxError:  # RunFailed too
        return None
