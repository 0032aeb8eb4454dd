"""A cached layer's activation maps (`featx extract --pool none`) as an array-like read from HDF5 on demand.

Maps are large (EfficientNet-Lite0's block6d_add at 224 px: 7x7x192 = 9,408 values per image and view, 37 KB as
float32), so 10,000 images with 8 views do not fit in memory. `CachedMaps` stands where `load` puts X: it has X's
shape (images x V*d, views side by side), selecting rows (X[train], X[split == "val"]) selects images without
reading anything, and `read` returns the requested rows of one view, reading each HDF5 chunk they touch once.
The tail estimator (featx.classifiers.tail) streams its minibatches from it; anything else that needs the whole
array gets it through np.asarray.
"""

from __future__ import annotations

import numpy as np

from featx.cache.store import CacheEntry
from featx.sources.views import IDENTITY


class CachedMaps:
    """Rows `rows` (entry row indices, ascending) of layer `layer` of `entry`, with the views `views` side by side.

    shape : (n_images, V * d), d = h * w * c of the layer's map; dtype : the entry's stored dtype (float32 or
    float16); map_shape : (h, w, c). Reads are float32.
    """

    ndim = 2

    def __init__(self, entry: CacheEntry, layer: str, rows, views=(IDENTITY,)):
        self.entry, self.layer, self.views = entry, layer, tuple(views)
        self.rows = np.asarray(rows, dtype=np.int64)
        info = entry.layer_info[layer]
        self.map_shape = tuple(int(d) for d in info["output_shape"])
        self.d = int(info["n_features"])
        self.dtype = np.dtype(entry.settings["dtype"])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.views) * self.d

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        """Rows (a boolean mask, integer positions or a slice) -> a CachedMaps of those images; nothing is read.
        (rows, columns) where the columns are whole views' blocks, in order (X[:, :d], the identity view; compare's
        column subset of the one layer) -> a CachedMaps of those rows and views, nothing read; other columns are
        read into memory."""
        if isinstance(index, tuple):
            rows, columns = index
            views = self._views_of(columns)
            if views is None:
                return np.asarray(self)[index]
            return CachedMaps(self.entry, self.layer, self.rows[rows], views)
        return CachedMaps(self.entry, self.layer, self.rows[index], self.views)

    def _views_of(self, columns) -> tuple | None:
        """The views whose whole column blocks `columns` (a slice or integer array) are, in order; else None."""
        wanted = np.arange(self.shape[1])[columns]
        if wanted.ndim != 1 or len(wanted) == 0 or len(wanted) % self.d:
            return None
        blocks = wanted.reshape(-1, self.d)
        starts = blocks[:, 0]
        if (starts % self.d).any() or not np.array_equal(blocks, starts[:, None] + np.arange(self.d)):
            return None
        return tuple(self.views[int(s) // self.d] for s in starts)

    def __array__(self, dtype=None, copy=None):
        """Every row, views side by side: (n_images, V * d). Only for what cannot stream (it holds all in memory)."""
        out = np.concatenate([self.read(np.arange(len(self.rows)), view) for view in self.views], axis=1)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __reduce__(self):  # joblib sends it to workers as a reference to the files, never as the data
        return CachedMaps, (self.entry, self.layer, self.rows, self.views)

    def chunk_rows(self, view: str = IDENTITY) -> int:
        """Rows per HDF5 chunk of the view's layer file (the unit of a read)."""
        with self.entry.open_layer(self.layer, view) as ds:
            return int(ds.chunks[0]) if ds.chunks else max(1, len(self.entry.labels))

    def read(self, positions, view: str = IDENTITY) -> np.ndarray:
        """float32 (len(positions), d): the maps of images `positions` (indices into this array's rows, any order)
        in view `view`, each HDF5 chunk they touch read once."""
        positions = np.asarray(positions, dtype=np.int64)
        entry_rows = self.rows[positions]
        order = np.argsort(entry_rows, kind="stable")
        wanted = entry_rows[order]
        out = np.empty((len(wanted), self.d), dtype=np.float32)
        with self.entry.open_layer(self.layer, view) as ds:
            chunk = int(ds.chunks[0]) if ds.chunks else ds.shape[0]
            keys = wanted // chunk
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(wanted) else np.array([], int)
            for start, stop in zip(starts, np.r_[starts[1:], len(wanted)]):
                low = int(keys[start]) * chunk
                block = ds[low : min(low + chunk, ds.shape[0])]
                out[start:stop] = block[wanted[start:stop] - low]
        result = np.empty_like(out)
        result[order] = out
        return result


def cached_maps(entry: CacheEntry, layer: str, *, views=None) -> tuple[CachedMaps, np.ndarray, np.ndarray]:
    """(X, y, split) of the entry's valid (decoded) images for the tail estimator: X a CachedMaps of `layer` with
    `views` (None: the identity view), y the labels (n_images,), split the split names (n_images,)."""
    rows = np.flatnonzero(entry.valid)
    views = (IDENTITY,) if views is None else tuple(views)
    return CachedMaps(entry, layer, rows, views), np.asarray(entry.labels)[rows], np.asarray(entry.split)[rows]


def load_maps(entry: CacheEntry, layers=None, *, views=None):
    """`featx.features.load.load` for the tail estimator: the same Features (unpacking as X, y, meta), X a CachedMaps of one layer (the
    cut) that reads rows when they are used, so maps larger than memory can be trained on.

    entry : one opened CacheEntry (or a list holding one); layers : the one layer (name or LayerSelection);
    views : view names (identity first) or None.
    """
    from featx.errors import FeatxError
    from featx.features.load import Features, check_views, select_cached

    if isinstance(entry, (list, tuple)):
        if len(entry) != 1:
            raise FeatxError("the tail classifier trains on the maps of one cache entry; name one entry, not several")
        entry = entry[0]
    selection = select_cached(entry, layers)
    if len(selection.names) != 1:
        raise FeatxError(
            f"the tail classifier trains on one layer's maps (its cut), not {len(selection.names)} "
            f"layers ({', '.join(selection.names)}); pass --layers CUT or leave --layers out"
        )
    if views is None:
        views = (IDENTITY,)
    elif isinstance(views, str):
        from featx.sources.views import parse_views

        views = parse_views(views)
    else:
        views = tuple(views)
    check_views(entry, selection, views)
    X, y, split = cached_maps(entry, selection.names[0], views=views)
    return Features(
        X,
        y,
        _meta(entry, X.rows, y, split),
        selection=selection,
        feature_slices={selection.names[0]: (0, X.d)},
        class_names=entry.class_names,
        cache_key=entry.key,
        cache_path=str(entry.path),
        settings=entry.settings,
        views=None if views == (IDENTITY,) else views,
        entries=[entry.name],
    )


class CutMaps:
    """The cached maps of several cuts of the same images, for a search over the cut (`featx tune --clf tail`
    without --cut): one CachedMaps per cut, each read from the entry that caches it (one entry caching several
    cuts, or entries of the same images). Selecting rows selects images in all of them, nothing read; the tail
    estimator trains on the maps of its own cut (`for_cut`), so one search varies the cut like any parameter.

    shape : (n_images, sum over the cuts of V * d); cuts : the cut layers, in depth order.
    """

    ndim = 2

    def __init__(self, maps: dict):
        self.maps = dict(maps)
        if len({len(m) for m in self.maps.values()}) > 1:
            raise ValueError("the cuts' maps must hold the same images")

    @property
    def cuts(self) -> tuple[str, ...]:
        return tuple(self.maps)

    @property
    def views(self) -> tuple:
        return next(iter(self.maps.values())).views

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), sum(m.shape[1] for m in self.maps.values())

    def __len__(self) -> int:
        return len(next(iter(self.maps.values())))

    def __getitem__(self, index):
        """Rows (a boolean mask, integer positions or a slice) -> a CutMaps of those images; nothing is read."""
        if isinstance(index, tuple):
            raise TypeError("a CutMaps selects rows (images); take one cut's maps with for_cut(cut) first")
        return CutMaps({cut: maps[index] for cut, maps in self.maps.items()})

    def for_cut(self, cut: str) -> CachedMaps:
        """The CachedMaps of `cut` (these rows and views)."""
        if cut not in self.maps:
            from featx.errors import FeatxError

            raise FeatxError(f"the maps hold the cuts {', '.join(self.maps)}, not {cut}; pick one of them as cut")
        return self.maps[cut]


def load_cut_maps(entries, cuts, *, views=None):
    """Features (X, y, meta) whose X is a CutMaps of `cuts`, each cut's maps from the first of `entries` (opened
    CacheEntry objects of the same images) that caches it with --pool none; the entries' images, labels and
    split must agree. views : view names (identity first) or None. selection names the cuts; feature_slices
    gives each cut's columns (one view) within the CutMaps' side-by-side layout; entries names the entries used."""
    from featx.backbones.layers import LayerSelection
    from featx.errors import FeatxError
    from featx.features.load import check_same_images, check_views

    views = (IDENTITY,) if views is None else tuple(views)
    maps, used, y, split = {}, [], None, None
    for cut in cuts:
        entry = next((e for e in entries if e.settings.get("pool") == "none" and cut in e.layers), None)
        if entry is None:
            raise FeatxError(f"no cache entry given caches the maps of {cut} (--pool none)")
        if entry not in used:
            if used:
                check_same_images(used[0], entry)
            used.append(entry)
        check_views(entry, LayerSelection(cut, (cut,)), views)
        maps[cut], y, split = cached_maps(entry, cut, views=views)
    from featx.features.load import Features

    X, first = CutMaps(maps), used[0]
    meta = _meta(first, next(iter(maps.values())).rows, y, split)
    slices, offset = {}, 0
    for cut, m in maps.items():
        slices[cut] = (offset, offset + m.d)
        offset += m.d
    return Features(
        X,
        y,
        meta,
        selection=LayerSelection(",".join(cuts), tuple(cuts)),
        feature_slices=slices,
        class_names=first.class_names,
        cache_key="+".join(e.key for e in used),
        cache_path=str(first.path),
        settings=first.settings,
        views=None if views == (IDENTITY,) else views,
        entries=[e.name for e in used],
    )


def _meta(entry: CacheEntry, rows, y, split):
    """load's meta for the entry's rows `rows`: path, label, class_name, split."""
    import pandas as pd

    return pd.DataFrame(
        {
            "path": np.asarray(entry.relpaths, dtype=object)[rows],
            "label": y,
            "class_name": np.asarray(entry.class_names, dtype=object)[y],
            "split": split,
        }
    )


def is_streamed(X) -> bool:
    """X reads its rows from HDF5 as they are used (CachedMaps, CutMaps): experiments hand it on, never np.asarray."""
    return isinstance(X, (CachedMaps, CutMaps))
