"""Read a layer subset of a cache entry as Features (X, y, meta and what they are): the one way every experiment gets
its features."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from featx.backbones.layers import LayerSelection, infos_from_metadata, layer_selection
from featx.cache.store import Cache, CacheEntry
from featx.errors import FeatxError, RunFailed
from featx.sources.splits import SPLITS
from featx.sources.views import IDENTITY, parse_views


@dataclass(frozen=True, eq=False)
class Features:
    """What `load` returns: the feature matrix, the labels, one metadata row per sample, and what the columns are.

    Unpacks as `X, y, meta = load(...)` (and `load(...)[0]` is X); everything else is an attribute, never kept in
    `meta.attrs` (which pandas operations drop).

    X : float ndarray of shape (n_samples, n_features), or with views (n_samples, V * n_features): view v's
        features in columns [v * n_features, (v + 1) * n_features)
    y : int ndarray of shape (n_samples,), indexes into class_names
    meta : DataFrame with columns path, label, class_name, split (one row per sample)
    selection : the LayerSelection read (spec as given, names in depth order); `layers` is its names as a list
    feature_slices : {layer: (start, stop)} columns of each layer within one view's columns
    class_names : list of str
    cache_key, cache_path : the entry's key and folder (combined: the keys joined by "+", the first entry's folder)
    settings : the entry's settings (combined: {entry name: settings})
    views : the view names read side by side, identity first; None: the identity view alone
    entries : the names of the entries read (combined: several)
    """

    X: np.ndarray
    y: np.ndarray
    meta: pd.DataFrame
    selection: LayerSelection
    feature_slices: dict
    class_names: list
    cache_key: str
    cache_path: str
    settings: dict
    views: tuple | None = None
    entries: list = field(default_factory=list)

    @property
    def layers(self) -> list[str]:
        return list(self.selection.names)

    @property
    def n_views(self) -> int:
        """Views side by side in X (1 without views)."""
        return len(self.views) if self.views else 1

    def __iter__(self):
        return iter((self.X, self.y, self.meta))

    def __getitem__(self, index):
        return (self.X, self.y, self.meta)[index]

    def __len__(self) -> int:
        return 3


def select_cached(entry: CacheEntry, layers=None) -> LayerSelection:
    """The entry's LayerSelection: names and groups (all, blocks, final, fc) -> cached layers in depth order.

    Groups mean their cached members; None means every cached layer; a LayerSelection is checked against this
    entry and keeps its spec. An entry with no layer cached yet is one line (require_layers).
    """
    require_layers(entry)
    if layers is None:
        return LayerSelection(",".join(entry.layers), tuple(entry.layers))
    if isinstance(layers, LayerSelection):
        return replace(select_cached(entry, list(layers.names)), spec=layers.spec)
    return layer_selection(
        infos_from_metadata(entry.layer_info),
        layers,
        model_name=entry.settings["backbone"],
        cached=entry.layers,
        entry_name=entry.name,
    )


def require_layers(entry: CacheEntry) -> None:
    """One line when `entry` has no layer cached yet: its first extraction pass is still pending (killed or
    stopped before it finished: its rows are in work/ until then), or none was ever run."""
    if entry.layers:
        return
    from featx.cache.passlog import PassLog  # the only reader of work/

    try:
        pending = PassLog.summary(entry)
    except FeatxError:
        pending = None
    if pending is None:
        raise FeatxError(f"cache entry {entry.name} has no cached layers; run `featx extract` on its data")
    rows = "no committed rows yet" if pending.committed_rows == 0 else "no finished layer yet"
    raise FeatxError(
        f"cache entry {entry.name} has {rows} (its first extraction stopped at image "
        f"{pending.committed_rows}/{pending.n_rows}); run `featx extract` again with the same options "
        "to finish it"
    )


def load(entry=None, layers=None, *, split: str | None = None, views=None, cache=None) -> Features:
    """Features of the valid (decoded) images of a cache entry, or of several entries side by side.

    entry : an entry (name, key prefix, folder or CacheEntry; None: the most recent) of `cache` (a Cache or a cache
        folder; None: $FEATX_CACHE or ./cache), or a list of entries of the same images (see load_combined).
    layers : names, groups, a comma list of them, or a LayerSelection; None: every cached layer. Layers are
        concatenated in the backbone's depth order, whatever order they are named in.
    views : augmented views to read side by side: names (identity "id" first) or a spec string
        (featx.sources.views.parse_views, seed 0; pass names for rand views of another seed). None: the
        identity view alone, as X always was. Rows stay images, so splits and CV folds of rows are by image.

    Returns
    -------
    Features : unpacks as X, y, meta; X of shape (n_samples, n_features), or with views (n_samples, V * n_features):
        view v's features in columns [v * n_features, (v + 1) * n_features); y of shape (n_samples,); meta a
        DataFrame (path, label, class_name, split). Its attributes tell the rest: selection, layers,
        feature_slices (within one view's columns), class_names, cache_key, cache_path, settings, views, entries.
    """
    if isinstance(entry, (list, tuple)):
        return load_combined(entry, layers=layers, split=split, views=views, cache=cache)
    entry = Cache.resolve(cache).open(entry)
    selection = select_cached(entry, layers)
    rows = entry.valid.copy()
    if split is not None:
        if split not in SPLITS:
            raise FeatxError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
        rows &= entry.split == split
    rows = np.flatnonzero(rows)
    if views is None:
        X, slices = entry.read(selection.names, rows)
    else:
        views = parse_views(views) if isinstance(views, str) else tuple(views)
        check_views(entry, selection, views)
        parts = [entry.read(selection.names, rows, view=view) for view in views]
        X, slices = np.concatenate([x for x, _ in parts], axis=1), parts[0][1]
    _check_finite(entry, X, slices, rows, views or (IDENTITY,))
    y = entry.labels[rows]
    meta = pd.DataFrame(
        {
            "path": np.asarray(entry.relpaths, dtype=object)[rows],
            "label": y,
            "class_name": np.asarray(entry.class_names, dtype=object)[y],
            "split": entry.split[rows],
        }
    )
    return Features(
        X,
        y,
        meta,
        selection=selection,
        feature_slices=slices,
        class_names=entry.class_names,
        cache_key=entry.key,
        cache_path=str(entry.path),
        settings=entry.settings,
        views=views,
        entries=[entry.name],
    )


def _check_finite(entry: CacheEntry, X: np.ndarray, slices: dict, rows: np.ndarray, views: tuple) -> None:
    """One line naming the first layer (and view) with NaN or Inf features among the rows read, and how many rows:
    no classifier can fit on them. They come from a damaged file (`featx verify` finds it) or from the backbone
    itself (e.g. activations beyond float16's range, stored with --dtype float16 or computed with
    --mixed-precision); the layer digest does not tell these apart, so the check is on the values."""
    width = X.shape[1] // len(views)
    for v, view in enumerate(views):
        for name, (start, stop) in slices.items():
            bad = np.flatnonzero(~np.isfinite(X[:, v * width + start : v * width + stop]).all(axis=1))
            if len(bad):
                where = "" if view == IDENTITY else f" (view {view})"
                raise RunFailed(
                    f"layer {name}{where} of cache entry {entry.name} has NaN/Inf features in {len(bad)} of {len(X)} "
                    f"row(s) (first: {entry.relpaths[rows[bad[0]]]}); leave it out of --layers, or run `featx verify` "
                    "and re-extract it (a backbone that overflows needs --dtype float32 and no --mixed-precision)"
                )


def check_views_cached(entry: CacheEntry, layers, views) -> None:
    """The one line `load(entry, layers=layers, views=views)` would stop with for views not cached, before any
    features are read (a search over several entries checks them all first)."""
    check_views(entry, select_cached(entry, layers), parse_views(views) if isinstance(views, str) else tuple(views))


def check_views(entry: CacheEntry, selection: LayerSelection, views: tuple) -> None:
    """Every view of every selected layer is cached in `entry`; else one line naming what is missing and the
    extract that adds it (only the missing views are computed)."""
    missing = {view: [n for n in selection.names if n not in entry.view_layers(view)] for view in views}
    missing = {view: names for view, names in missing.items() if names}
    if missing:
        layers = list(dict.fromkeys(n for names in missing.values() for n in names))
        raise FeatxError(
            f"cache entry {entry.name} lacks view(s) {', '.join(missing)} of layer(s) {', '.join(layers)}; "
            f"run `featx extract` with the entry's options and --views {','.join(missing)} "
            f"--layers {','.join(layers)}"
        )


def load_combined(entries, *, layers=None, split: str | None = None, views=None, cache=None) -> Features:
    """Features of several entries of the same images concatenated column-wise, row-aligned by image: two
    backbones (lite0 + lite2), or two poolings of one backbone (each pooling is its own entry).

    The entries must hold the same images in the same order with the same labels, split and decoded rows
    (FeatxError otherwise). `layers` is resolved in each entry. Returns Features as `load`; with two or more
    entries, its selection, layers and feature_slices name columns "<entry name>/<layer>", cache_key is the keys
    joined by "+", cache_path the first entry's folder, settings {entry name: settings}, entries the names.
    With views, each view's columns hold every entry's features of that view, entry by entry.
    """
    entries = Cache.resolve(cache).open_all(entries)
    if len(entries) == 1:
        return load(entries[0], layers=layers, split=split, views=views)
    for other in entries[1:]:
        check_same_images(entries[0], other)
    parts = [load(entry, layers=layers, split=split, views=views) for entry in entries]
    first, n_views = parts[0], parts[0].n_views
    names, slices, offset = [], {}, 0
    for entry, part in zip(entries, parts):
        for layer in part.layers:
            start, stop = part.feature_slices[layer]
            names.append(f"{entry.name}/{layer}")
            slices[names[-1]] = (offset + start, offset + stop)
        offset += part.X.shape[1] // n_views
    # with views, each view's block joins the entries' features of that view: (n, V * (d_1 + d_2 + ...))
    X = np.concatenate([p.X.reshape(len(p.X), n_views, p.X.shape[1] // n_views) for p in parts], axis=2)
    X = X.reshape(len(X), n_views * X.shape[2])
    return replace(
        first,
        X=X,
        selection=LayerSelection(first.selection.spec, tuple(names)),
        feature_slices=slices,
        cache_key="+".join(e.key for e in entries),
        settings={e.name: e.settings for e in entries},
        entries=[e.name for e in entries],
    )


def check_same_images(first: CacheEntry, other: CacheEntry) -> None:
    """Refuse to combine entries whose rows are not the same images (by path and content), labels and split."""
    checks = {
        "image paths": (first.relpaths, other.relpaths),
        "class names": (first.class_names, other.class_names),
        "image contents (fingerprints)": (first.data["fingerprints"], other.data["fingerprints"]),
        "labels": (first.labels, other.labels),
        "split": (first.split, other.split),
        "decoded images": (first.valid, other.valid),
    }
    for what, (a, b) in checks.items():
        if len(a) != len(b) or not np.array_equal(np.asarray(a), np.asarray(b)):
            raise FeatxError(
                f"cache entries {first.name} and {other.name} differ in their {what}, so their rows cannot "
                "be combined; extract both from the same data with the same --limit, --split and --seed"
            )
