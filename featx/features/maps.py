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
        """Rows (a boolean mask, integer positions or a slice) -> a CachedMaps of those images; nothing is read."""
        if isinstance(index, tuple):
            return np.asarray(self)[index]
        return CachedMaps(self.entry, self.layer, self.rows[index], self.views)

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


def load_maps(cache=None, *, layers=None, cache_dir=None, views=None):
    """`featx.features.load.load` for the tail estimator: the same Features (unpacking as X, y, meta), X a CachedMaps of one layer (the
    cut) that reads rows when they are used, so maps larger than memory can be trained on.

    cache : one entry (name, key prefix, folder or CacheEntry); layers : the one layer (name or LayerSelection);
    views : view names (identity first) or None.
    """
    import pandas as pd

    from featx.cache.store import Cache
    from featx.errors import FeatxError
    from featx.features.load import Features, _check_views, select_cached

    if isinstance(cache, (list, tuple)):
        if len(cache) != 1:
            raise FeatxError("the tail classifier trains on the maps of one cache entry; name one entry, not several")
        cache = cache[0]
    entry = Cache(cache_dir).open(cache)
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
    _check_views(entry, selection, views)
    X, y, split = cached_maps(entry, selection.names[0], views=views)
    rows = X.rows
    meta = pd.DataFrame(
        {
            "path": np.asarray(entry.relpaths, dtype=object)[rows],
            "label": y,
            "class_name": np.asarray(entry.class_names, dtype=object)[y],
            "split": split,
        }
    )
    return Features(
        X,
        y,
        meta,
        selection=selection,
        feature_slices={selection.names[0]: (0, X.d)},
        class_names=entry.class_names,
        cache_key=entry.key,
        cache_path=str(entry.path),
        settings=entry.settings,
        views=None if views == (IDENTITY,) else views,
        entries=[entry.name],
    )
