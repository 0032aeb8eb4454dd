"""What the verbs read, checked before anything is read or written: entries that can be trained on, the tail's cut
and its cached maps (`--clf tail`: the entry's backbone description handed to the estimator as its `backbone`
parameter), and the one loader of fit, compare and tune (features in memory, or the tail's maps streamed)."""

from __future__ import annotations

import dataclasses

import numpy as np

from featx.cache.store import CacheEntry
from featx.classifiers import BASELINES
from featx.classifiers.registry import TAIL
from featx.errors import FeatxError
from featx.features.load import require_layers
from featx.selection.spec import FitSpec


def tail_params(
    entry: CacheEntry, classifiers, params: dict, layers=None, *, cuts: list[CacheEntry] | None = None
) -> tuple[dict, object]:
    """(params, layers) for fitting `classifiers` on `entry`: unchanged unless one is the tail; then params gain
    `backbone` (the entry's, featx.backbones.backbone_description) and layers default to the cut. One line, before
    any data is read, when no cut is given or the entry does not cache its maps.
    cuts : a search (tune) given no cut searches the cut instead: the entries whose cached cuts are candidates
    (cached_cuts); layers becomes the tuple of those cuts (depth order; load_features reads them as a CutMaps),
    and params get no cut (or the one cut, when only one is cached)."""
    names = [c.strip() for c in classifiers.split(",")] if isinstance(classifiers, str) else list(classifiers)
    if TAIL not in names:
        return params, layers
    from featx.backbones import backbone_description

    cut = params.get("cut")
    if not cut and cuts is not None:
        found = tuple(cached_cuts(cuts, layers))
        params = {**params, "backbone": backbone_description(entry)}
        return {**params, "cut": found[0]} if len(found) == 1 else params, found
    if not cut:
        raise FeatxError(
            "--clf tail trains the backbone's layers above a cut and needs --cut LAYER (`featx layers "
            f"{entry.settings['backbone']} --cuts` lists them), cached with --pool none"
        )
    require_cut_maps(entry, cut)
    return {**params, "backbone": backbone_description(entry)}, cut if layers is None else layers


def tail_specs(entry: CacheEntry, specs, layers=None, *, cuts: list[CacheEntry] | None = None) -> tuple[list, object]:
    """(specs, layers) with each tail spec's params completed from `entry` as tail_params does (the entry's backbone);
    the other specs as they are. The one place fit, compare, tune and pipeline reuse complete a tail's spec.
    cuts : as in tail_params (tune: a tail without a cut searches the cuts cached in these entries)."""

    completed = []
    for spec in specs:
        if spec.classifier == TAIL:
            params, layers = tail_params(entry, [TAIL], spec.params, layers, cuts=cuts)
            spec = dataclasses.replace(spec, params=params)
        completed.append(spec)
    return completed, layers


def require_cut_maps(entry: CacheEntry, cut: str) -> None:
    """One line naming the `featx extract` to run when `entry` does not hold the maps of layer `cut` (--pool none)."""
    pool = entry.settings.get("pool")
    if pool == "none" and cut in entry.layers:
        return
    args = entry.backbone_args
    words = ["featx extract", f"--data {_data(entry)}", f"--backbone {args['name']}"]
    words += [
        f"--{k.replace('_', '-')} {args[k]}"
        for k in ("weights", "input_size", "preprocess")
        if args.get(k) not in (None, "imagenet")
    ]
    words += [f"--layers {cut}", "--pool none"]
    why = f"caches pooled features (--pool {pool})" if pool != "none" else "does not cache that layer"
    raise FeatxError(
        f"--clf tail trains on the activation maps of its cut {cut}, and cache entry {entry.name} {why}; "
        f"run `{' '.join(words)}` with the entry's --limit/--split/--seed, then fit on that entry"
    )


def cached_cuts(entries: list[CacheEntry], layers=None) -> list[str]:
    """The cuts a search over the cut can try: the layers the entries cache with --pool none (among `layers`, names
    or groups, when given) that are cuts of their backbone (featx.backbones.cuts), in depth order. The entries must
    be of one backbone (their maps feed one tail); one line when none is left, naming the extraction that adds one."""
    from featx.backbones import backbone_description, backbone_from_entry
    from featx.backbones.cuts import find_cuts
    from featx.features.load import select_cached

    first = entries[0]
    for other in entries[1:]:
        if backbone_description(other) != backbone_description(first):
            raise FeatxError(
                f"cache entries {first.name} and {other.name} come from different backbones (or weights, sizes); "
                "a search over the cut needs the cuts of one backbone: name entries of one"
            )
    cached = set()
    for entry in entries:
        if entry.settings.get("pool") == "none":
            cached |= set(entry.layers if layers is None else select_cached(entry, layers).names)
    found = [c.name for c in find_cuts(backbone_from_entry(first)) if c.name in cached] if cached else []
    if not found:
        raise FeatxError(
            f"--clf tail without --cut searches the cuts cached with --pool none, and cache entr"
            f"{'y' if len(entries) == 1 else 'ies'} {', '.join(e.name for e in entries)} cache"
            f"{'s' if len(entries) == 1 else ''} none{'' if layers is None else ' among --layers'}; cache some with "
            f"`featx extract --layers CUT1,CUT2 --pool none` (`featx layers {first.settings['backbone']} --cuts` "
            "lists them) or pass --cut LAYER"
        )
    return found


def load_features(entries: list[CacheEntry], specs, layers=None, views=None):
    """The one loader of fit, compare and tune: Features of `layers` of `entries`. When the specs train the tail
    (each one not a baseline is a tail), X streams from HDF5 as it trains: a featx.features.maps.CachedMaps of the
    cut, or with a tuple of several cuts (a search over the cut, tail_params) a CutMaps of them; else `load` (several
    entries: their features combined), in memory."""
    from featx.features.load import load, load_combined
    from featx.features.maps import load_cut_maps, load_maps

    trained = [spec.classifier for spec in specs if spec.classifier not in BASELINES]
    if not trained or any(clf != TAIL for clf in trained):
        return (load_combined if len(entries) > 1 else load)(
            entries if len(entries) > 1 else entries[0], layers=layers, views=views
        )
    if isinstance(layers, tuple) and len(layers) > 1:
        return load_cut_maps(entries, layers, views=views)
    return load_maps(entries if len(entries) > 1 else entries[0], layers=layers, views=views)


def _data(entry: CacheEntry) -> str:
    description = entry.manifest.description or ""
    return "elpv" if description.startswith("built-in elpv") else str(entry.manifest.root)


def check_trainable(entry: CacheEntry, *, cv: int | None = None, selects: bool = False, log=print) -> None:
    """One line, before anything is read or written, when `entry` cannot train a classifier: no layer cached
    yet (a first extraction still pending), images of fewer than 2 classes, in all or in the train rows, or
    (`selects`: compare and tune rank on val unless `cv`) no val rows. fit without val rows and without `cv`
    is still scored on test, but `featx runs` cannot rank its run: `log` says so."""
    require_layers(entry)
    valid = np.asarray(entry.valid, dtype=bool)
    labels, split, names = np.asarray(entry.labels)[valid], np.asarray(entry.split)[valid], entry.class_names
    present = np.unique(labels)
    if len(present) < 2:
        what = "no decoded images" if not len(present) else f"1 class ({names[present[0]]})"
        of = f" of its {len(names)}, the others having no decoded image" if len(present) and len(names) > 1 else ""
        raise FeatxError(
            f"cache entry {entry.name} ({entry.data_label}) has {what}{of}; a classifier needs at least 2 "
            "— add images of another class and run `featx extract` again"
        )
    train = np.unique(labels[split == "train"])
    if not len(train):
        raise FeatxError(
            f"cache entry {entry.name} has no train rows to fit on; re-run `featx extract` with a --split "
            "that has a train part"
        )
    if len(train) < 2:
        raise FeatxError(
            f"the train rows of cache entry {entry.name} have 1 class ({names[train[0]]}) of its "
            f"{len(present)}; a classifier needs at least 2 — give other classes train rows (the "
            "manifest's split column, or --split/--seed at `featx extract`)"
        )
    if cv or (split == "val").any():
        return
    if selects:
        raise FeatxError(
            f"cache entry {entry.name} has no val rows (split {_split_label(entry)}), so nothing can "
            "be selected on val; pass --cv K to select by cross-validation over the train rows, or "
            "re-extract with a val part, e.g. --split 0.7,0.15,0.15"
        )
    log(
        f"note: cache entry {entry.name} has no val rows (split {_split_label(entry)}): this run gets no val score, "
        "so `featx runs` cannot rank it (never by test); pass --cv K to score it by cross-validation over train"
    )


def _split_label(entry: CacheEntry) -> str:
    fractions = entry.split_settings.get("fractions") if isinstance(entry.split_settings, dict) else None
    return ",".join(f"{f:g}" for f in fractions) if fractions else "from the manifest"


def loaded_views(spec: FitSpec) -> tuple[str, ...] | None:
    """What `load` reads for spec: its views side by side, or None (the plain features) for a plain spec."""
    return None if spec.plain else spec.views
