"""Which entry an experiment runs on, said in words: picked by its data and backbone, described in one label."""

from __future__ import annotations

from featx.cache.store import Cache, CacheEntry
from featx.errors import FeatxError


def entry_label(entry: CacheEntry) -> str:
    """'efficientnet_lite0 on built-in elpv (...)', flagged [random weights] for a `--weights none` entry: every
    fit, compare, extract and listing says which data and backbone its numbers come from."""
    return f"{entry.settings['backbone']} on {entry.data_label}"


def data_labels(cache=None) -> dict[str, str]:
    """{cache key: data_label} of every readable entry of a Cache (or cache folder), for tables of runs (which
    store only the key)."""
    return {e.key: e.data_label for e in Cache.resolve(cache).entries()}


def key_data_label(cache_key, labels: dict[str, str], missing: str = "(entry not in this cache)") -> str:
    """The data label of a run's cache key, from data_labels' `labels`: a combined run's key joins its entries'
    keys with "+", and so does its label; `missing` stands for an entry no longer in the cache."""
    return " + ".join(labels.get(part, missing) for part in str(cache_key).split("+"))


def pick_entry(cache=None, *, data: str | None = None, backbone: str | None = None) -> CacheEntry:
    """The most recent entry extracted from `data` (as given to extract: a folder, CSV or 'elpv') with
    `backbone` (registry name or model file); either may be None (any). An error lists the entries otherwise."""
    cache = Cache.resolve(cache)
    entries = cache.entries()
    source = None
    if data is not None:
        from featx.sources import resolve_source

        source = resolve_source(data)
    matches = [
        e
        for e in entries
        if (
            source is None or (e.manifest.root == source.root and e.manifest.description.startswith(source.description))
        )
        and (backbone is None or backbone in (e.backbone_args.get("name"), e.settings["backbone"]))
    ]
    if not matches:
        wanted = " and ".join(w for w in (data and f"--data {data}", backbone and f"--backbone {backbone}") if w)
        listed = "; ".join(f"{e.name}: {entry_label(e)}" for e in entries) or "none"
        raise FeatxError(
            f"no cache entry in '{cache.root}' matches {wanted}; cached: {listed} "
            "(run `featx extract` with them first, or pick one of these)"
        )
    return matches[0]
