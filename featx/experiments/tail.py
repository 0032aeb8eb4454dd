"""The front-door checks of `--clf tail`, shared by fit, compare and tune: a cut given, its maps cached by the
entry (`--pool none`), and the entry's backbone description handed to the estimator as its `backbone` parameter."""

from __future__ import annotations

from featx.cache.store import CacheEntry
from featx.errors import FeatxError

TAIL = "tail"


def tail_params(entry: CacheEntry, classifiers, params: dict, layers=None) -> tuple[dict, object]:
    """(params, layers) for fitting `classifiers` on `entry`: unchanged unless one is the tail; then params gain
    `backbone` (the entry's, featx.backbones.backbone_description) and layers default to the cut. One line, before
    any data is read, when no cut is given or the entry does not cache its maps."""
    names = [c.strip() for c in classifiers.split(",")] if isinstance(classifiers, str) else list(classifiers)
    if TAIL not in names:
        return params, layers
    from featx.backbones import backbone_description

    cut = params.get("cut")
    if not cut:
        raise FeatxError(
            "--clf tail trains the backbone's layers above a cut and needs --cut LAYER (`featx layers "
            f"{entry.settings['backbone']} --cuts` lists them), cached with --pool none"
        )
    require_cut_maps(entry, cut)
    return {**params, "backbone": backbone_description(entry)}, cut if layers is None else layers


def tail_specs(entry: CacheEntry, specs, layers=None) -> tuple[list, object]:
    """(specs, layers) with each tail spec's params completed from `entry` as tail_params does (the entry's backbone);
    the other specs as they are. The one place fit, compare, tune and pipeline reuse complete a tail's spec."""
    import dataclasses

    completed = []
    for spec in specs:
        if spec.classifier == TAIL:
            params, layers = tail_params(entry, [TAIL], spec.params, layers)
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


def _data(entry: CacheEntry) -> str:
    description = entry.manifest.description or ""
    return "elpv" if description.startswith("built-in elpv") else str(entry.manifest.root)
