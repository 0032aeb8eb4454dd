"""Check a cache entry for anything a crash, a full disk, a concurrent writer or a hand edit could have left wrong.

`verify(entry)` returns one line per problem; an empty list means:

* `index.h5` has the bytes it was written with (a digest in its user block covers every attribute, class names,
  layer info, backbone arguments, split settings and description included, and every array), has this featx's
  format version, and its image list (paths, labels, fingerprints, split, valid/errors) is complete and
  consistent, every array still having the digest stored when it was written;
* the stored key equals the hash of the stored settings and image list (and the folder name), so the
  entry is served for exactly the data and settings it was made from;
* every published layer file (of every view) has the HDF5 metadata it was written with (their digest is checked
  before libhdf5 parses them, featx.cache.layerfile), lies inside the cache (no link leading out), names its
  view, and holds one row per image, with the stored dtype and width,
  its cache key and format version, no NaN or Inf, and rows whose blake2b digest, primed with the entry key,
  view and layer name, equals the one stored when the file was published (so any changed byte, finite or not,
  is found, and so is a file copied over another layer's or moved to another view's folder);
* an interrupted extraction pass (`work/`) can resume: its progress record matches the index, its raw files
  hold every committed row (finite), and none of its layers was published before all rows were committed.

Crash debris (temporary files of a killed writer, `.work-done-*`, `.new-*` of a dead creator) is not a
problem: it is never read, and the next `featx extract` removes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featx.cache.layerfile import LayerData, LayerFileError, open_layer_file
from featx.cache.layout import INDEX
from featx.cache.passlog import PassLog
from featx.cache.store import CacheEntry, IndexChanged, layer_digest
from featx.errors import FeatxError
from featx.sources.views import IDENTITY, is_view

BLOCK_BYTES = 16 << 20  # layers are scanned in blocks of rows, so a large layer never sits in memory whole


def verify(entry: CacheEntry | str | Path) -> list[str]:
    """Problems found in one cache entry (a CacheEntry or its folder), one line each; [] means it is sound."""
    path = Path(entry.path if isinstance(entry, CacheEntry) else entry)
    if not (path / INDEX).is_file():
        return [f"{path.name}: index.h5 is missing; this folder is not a complete cache entry (delete it)"]
    try:
        entry = CacheEntry(path, check=False)
    except IndexChanged:
        return [f"{path.name}: index.h5 changed since it was written (digest mismatch); it is not read further"]
    except FeatxError as exc:
        return [f"{path.name}: index.h5 cannot be read ({exc})"]
    problems = entry.index_problems()
    if problems:  # the checks below rely on a sound index
        return [f"{entry.name}: {p}" for p in problems]
    problems += _check_layers(entry)
    problems += PassLog.problems(entry)
    return [f"{entry.name}: {p}" for p in problems]


def _check_layers(entry: CacheEntry) -> list[str]:
    problems = []
    files = entry.stored_files()
    if files and "valid" not in entry.data:
        problems.append("layer files are published but the index has no record of bad files (valid/errors)")
    for view, name, file in files:
        label = name if view == IDENTITY else f"{name} (view {view})"
        if not is_view(view):
            problems.append(f"folder views/{file.parent.name} is not a view featx knows")
            continue
        if name not in entry.layer_info:
            problems.append(f"layer file {file.name} is not a layer of {entry.settings['backbone']}")
            continue
        try:
            with open_layer_file(file, entry.path.parent) as ds:
                problems += [f"layer {label}: {p}" for p in _check_features(entry, name, view, ds)]
        except LayerFileError as exc:
            problems.append(f"layer {label}: file cannot be read ({exc.problem})")
        except FeatxError as exc:  # a link leading out of the cache or to nothing, another format version
            problems.append(f"layer {label}: {exc}")
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:  # rows or attributes unreadable
            problems.append(f"layer {label}: file cannot be read ({getattr(exc, 'strerror', None) or exc})")
    return problems


def _check_features(entry: CacheEntry, name: str, view: str, ds: LayerData) -> list[str]:
    problems = entry.header_problems(name, view, ds)  # the checks every read of the file makes
    if ds.shape != entry.layer_shape(name) or ds.dtype != entry.dtype:
        return problems  # rows of another shape or type: not hashed
    (n, width), dtype = ds.shape, ds.dtype
    step = max(1, BLOCK_BYTES // (width * dtype.itemsize))
    digest, bad = layer_digest(entry.key, name, view), []
    for start in range(0, n, step):  # one read per block serves both the NaN scan and the digest
        block = ds[start : min(n, start + step)]
        bad.extend(start + int(r) for r in np.flatnonzero(~np.isfinite(block).all(axis=1)))
        digest.update(block)
    where = Path(ds.path).relative_to(entry.path)
    if bad:
        problems.append(f"NaN/Inf in {len(bad)} row(s), first rows {bad[:5]}")
    elif not entry.bound(ds.attrs, name, view):
        problems.append(
            f"{where} was not published as this layer of this view and entry (copied, moved or edited; digest mismatch)"
        )
    elif digest.hexdigest() != ds.attrs.get("digest"):
        problems.append(f"data in {where} changed since it was published (digest mismatch)")
    return problems
