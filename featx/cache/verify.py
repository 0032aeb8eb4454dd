"""Check a cache entry for anything a crash, a full disk, a concurrent writer or a hand edit could have left wrong.

`verify(entry)` returns one line per problem; an empty list means:

* `index.h5` opens, its image list (paths, labels, fingerprints, split, valid/errors) is complete and consistent;
* the stored key equals the hash of the stored settings and image list (and the folder name), so the
  entry is served for exactly the data and settings it was made from;
* every published layer file opens with h5py and holds one row per image, with the stored dtype and width,
  its cache key, and no NaN or Inf;
* an interrupted extraction pass (`work/`) can resume: its progress record matches the index, its raw files
  hold every committed row (finite), and none of its layers was published before all rows were committed.

Crash debris (temporary files of a killed writer, `.work-done-*`) is not a problem: it is never read, and the
next `featx extract` removes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, unquote

import h5py
import numpy as np

from featx.cache.key import cache_key
from featx.cache.store import FORMAT_VERSION, CacheEntry, default_cache_dir
from featx.errors import FeatxError
from featx.sources.splits import SPLITS

REQUIRED = ("paths", "labels", "fingerprints", "split")
BLOCK_BYTES = 16 << 20  # NaN/Inf scan in blocks of rows, so a large layer never sits in memory whole


def verify(entry: CacheEntry | str | Path) -> list[str]:
    """Problems found in one cache entry (a CacheEntry or its folder), one line each; [] means it is sound."""
    path = Path(entry.path if isinstance(entry, CacheEntry) else entry)
    if not (path / "index.h5").is_file():
        return [f"{path.name}: index.h5 is missing; this folder is not a complete cache entry (delete it)"]
    try:
        entry = CacheEntry(path)
    except (FeatxError, KeyError, ValueError) as exc:
        return [f"{path.name}: index.h5 cannot be read ({exc})"]
    problems = _check_index(entry)
    if problems:  # the checks below rely on a sound index
        return [f"{entry.name}: {p}" for p in problems]
    problems += _check_layers(entry)
    problems += _check_work(entry)
    return [f"{entry.name}: {p}" for p in problems]


def entry_folders(cache_dir=None) -> list[Path]:
    """Folders of a cache directory that are (or claim to be) cache entries; runs/, reports/ and .new-* are not."""
    cache_dir = Path(cache_dir or default_cache_dir())
    if not cache_dir.is_dir():
        return []
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / "index.h5").exists() or (p / "layers").is_dir()))


def pending_summary(entry: CacheEntry) -> str | None:
    """'pass in progress at row i/n (k layers)' for an interrupted pass, for reports; None when there is none."""
    try:
        state = json.loads((entry.path / "work" / "progress.json").read_text())
        return f"pass in progress at image {state['committed_rows']}/{state['n_rows']} ({len(state['layers'])} layer(s))"
    except (OSError, ValueError, KeyError):
        return None


def _check_index(entry: CacheEntry) -> list[str]:
    problems = []
    if entry.attrs.get("format_version") != FORMAT_VERSION:
        problems.append(f"format version {entry.attrs.get('format_version')} is not {FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in entry.data]
    if missing:
        return problems + [f"index lacks dataset(s) {', '.join(missing)}"]
    n = len(entry.data["paths"])
    lengths = {k: len(entry.data[k]) for k in (*REQUIRED, "valid", "errors") if k in entry.data}
    if any(length != n for length in lengths.values()):
        return problems + [f"index datasets have different lengths {lengths}"]
    if n == 0:
        problems.append("the image list is empty")
    labels = np.asarray(entry.labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(entry.class_names)):
        problems.append(f"labels outside 0..{len(entry.class_names) - 1} ({len(entry.class_names)} classes)")
    bad_split = sorted(set(map(str, entry.split)) - set(SPLITS))
    if bad_split:
        problems.append(f"split has value(s) {bad_split} outside {', '.join(SPLITS)}")
    if ("valid" in entry.data) != ("errors" in entry.data):
        problems.append("index has only one of valid/errors")
    elif "valid" in entry.data and not np.array_equal(np.asarray(entry.valid, bool), np.asarray(entry.data["errors"]) == ""):
        problems.append("valid rows do not match the recorded bad-file errors")
    key = cache_key(entry.settings, entry.relpaths, list(entry.data["fingerprints"]), entry.labels)
    if key != entry.key:
        problems.append("settings hash mismatch: the stored settings or image list do not hash to the entry's key "
                        "(edited or corrupted index); re-extract into a fresh cache")
    elif not entry.name.endswith(entry.key[:12]):
        problems.append(f"folder name does not end with the key prefix {entry.key[:12]}")
    return problems


def _check_layers(entry: CacheEntry) -> list[str]:
    problems = []
    n, dtype = len(entry.labels), np.dtype(entry.settings["dtype"])
    folder = entry.path / "layers"
    files = sorted(p for p in folder.glob("*.h5") if not p.name.startswith(".")) if folder.is_dir() else []
    if files and "valid" not in entry.data:
        problems.append("layer files are published but the index has no record of bad files (valid/errors)")
    for file in files:
        name = unquote(file.stem)
        if name not in entry.layer_info:
            problems.append(f"layer file {file.name} is not a layer of {entry.settings['backbone']}")
            continue
        try:
            with h5py.File(file, "r") as f:
                if "features" not in f:
                    problems.append(f"layer {name}: file has no 'features' dataset")
                    continue
                ds = f["features"]
                width = entry.layer_info[name]["n_features"]
                if ds.shape != (n, width):
                    problems.append(f"layer {name}: shape {ds.shape}, expected ({n}, {width}) (one row per image)")
                    continue
                if ds.dtype != dtype:
                    problems.append(f"layer {name}: dtype {ds.dtype}, expected {dtype}")
                if ds.attrs.get("cache_key") != entry.key:
                    problems.append(f"layer {name}: belongs to another cache key")
                bad = _non_finite_rows(lambda a, b: ds[a:b], n, width * ds.dtype.itemsize)
                if bad:
                    problems.append(f"layer {name}: NaN/Inf in {len(bad)} row(s), first rows {bad[:5]}")
        except (OSError, RuntimeError, KeyError) as exc:
            problems.append(f"layer {name}: file cannot be read by h5py ({exc})")
    return problems


def _check_work(entry: CacheEntry) -> list[str]:
    """An interrupted pass must be resumable exactly where it stopped."""
    progress = entry.path / "work" / "progress.json"
    if not progress.exists():
        return []  # no pass, or one killed before its first record: the next run starts afresh
    try:
        state = json.loads(progress.read_text())
        layers, n_rows, committed = state["layers"], int(state["n_rows"]), int(state["committed_rows"])
        batch_size, dtype, errors = int(state["batch_size"]), np.dtype(state["dtype"]), state["errors"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"work/progress.json is unreadable ({exc}); delete the work folder to restart the pass"]
    problems = []
    n = len(entry.labels)
    if n_rows != n:
        problems.append(f"interrupted pass is for {n_rows} images, the index has {n}")
    if not 0 <= committed <= n_rows or (committed % batch_size and committed != n_rows):
        problems.append(f"interrupted pass has committed {committed} rows, not whole batches of {batch_size} out of {n_rows}")
    if dtype != np.dtype(entry.settings["dtype"]):
        problems.append(f"interrupted pass stores {dtype}, the entry {entry.settings['dtype']}")
    unknown = [name for name in layers if name not in entry.layer_info]
    if unknown:
        problems.append(f"interrupted pass has unknown layer(s) {', '.join(unknown)}")
    late = [int(row) for row in errors if not 0 <= int(row) < committed]
    if late:
        problems.append(f"bad-file records for uncommitted rows {late[:5]}")
    if committed < n_rows:
        early = [name for name in layers if entry.layer_file(name).exists()]
        if early:
            problems.append(f"layer file(s) {', '.join(early)} published before their pass committed all rows")
    for name, info in layers.items():
        raw = entry.path / "work" / f"{quote(name, safe='')}.raw"
        row_bytes = int(info["n_features"]) * dtype.itemsize
        size = raw.stat().st_size if raw.exists() else 0
        if size < committed * row_bytes:
            problems.append(f"interrupted pass: raw rows of {name} hold {size // row_bytes} of {committed} committed rows")
        elif committed and not entry.layer_file(name).exists():
            data = np.memmap(raw, dtype=dtype, mode="r", shape=(committed, int(info["n_features"])))
            bad = _non_finite_rows(lambda a, b: data[a:b], committed, row_bytes)
            del data
            if bad:
                problems.append(f"interrupted pass: NaN/Inf in committed rows {bad[:5]} of {name}")
    return problems


def _non_finite_rows(read, n_rows: int, row_bytes: int) -> list[int]:
    step = max(1, BLOCK_BYTES // max(1, row_bytes))
    bad = []
    for start in range(0, n_rows, step):
        block = np.asarray(read(start, min(n_rows, start + step)))
        if block.dtype.kind == "f":
            bad.extend(start + int(r) for r in np.flatnonzero(~np.isfinite(block).all(axis=1)))
    return bad
