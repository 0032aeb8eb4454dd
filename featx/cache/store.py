"""The HDF5 store. One folder per cache entry (one backbone + settings + image list):

    <cache_dir>/<backbone>-<key[:12]>/
        index.h5            settings and key as attributes; paths, labels, fingerprints, split, valid, errors
        layers/<layer>.h5   one dataset `features` (n_images, n_features), row-chunked, uncompressed
        work/               an extraction pass in progress (see featx.cache.passlog)
        .lock               held by the one process writing this entry

Every file here is published by atomic rename (featx.cache.atomic), and a layer file only once all its
rows are committed, so a reader never sees partial data and a killed run never leaves a broken file.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np

from featx.cache.atomic import atomic_path, fsync_dir
from featx.cache.lock import EntryLock
from featx.errors import FeatxError, RunFailed

FORMAT_VERSION = 1
HDF5_OVERHEAD = 1 << 20  # headers and chunk index of one layer file, generously
CHUNK_BYTES = 1 << 20  # ~1 MiB row chunks: whole-layer reads stay sequential
STR = h5py.string_dtype()


def default_cache_dir() -> Path:
    return Path(os.environ.get("FEATX_CACHE", "cache"))


class CacheEntry:
    """A cache entry's index held in memory, and reads of its layers."""

    def __init__(self, path: Path):
        self.path = Path(path)
        index = self.path / "index.h5"
        try:
            with h5py.File(index, "r") as f:
                self.attrs = {k: _decode(v) for k, v in f.attrs.items()}
                self.data = {k: _decode(f[k][()]) for k in f}
                self.split_settings = json.loads(f["split"].attrs.get("settings", "{}"))
        except (OSError, KeyError) as exc:
            raise FeatxError(f"'{self.path}' is not a readable featx cache entry ({exc}); run `featx verify`") from None
        self.key = self.attrs["key"]
        self.settings = json.loads(self.attrs["settings"])
        self.layer_info = json.loads(self.attrs["layer_info"])
        self.class_names = json.loads(self.attrs["class_names"])
        self.backbone_args = json.loads(self.attrs["backbone_args"])

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def relpaths(self) -> list[str]:
        return list(self.data["paths"])

    @property
    def labels(self) -> np.ndarray:
        return self.data["labels"]

    @property
    def split(self) -> np.ndarray:
        return self.data["split"]

    @property
    def valid(self) -> np.ndarray:
        """Rows whose image decoded; bad files keep their row (so batches stay aligned) but are never served."""
        return self.data.get("valid", np.ones(len(self.labels), dtype=bool))

    @property
    def errors(self) -> dict[str, str]:
        return {p: e for p, e in zip(self.relpaths, self.data.get("errors", [])) if e}

    @property
    def layers(self) -> list[str]:
        """Layers fully stored, in the backbone's depth order."""
        return [name for name in self.layer_info if self.layer_file(name).exists()]

    def layer_file(self, name: str) -> Path:
        return self.path / "layers" / f"{quote(name, safe='')}.h5"

    def feature_size(self, name: str) -> int:
        with h5py.File(self.layer_file(name), "r") as f:
            return int(f["features"].shape[1])

    def read(self, layers: list[str], rows: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Concatenate the given layers (in depth order) into X of shape (n_rows, n_features).

        Returns X and {layer: (start, stop)} column slices. Only the named layer files are opened.
        """
        missing = [name for name in layers if name not in self.layer_info or not self.layer_file(name).exists()]
        if missing:
            raise FeatxError(
                f"layer(s) {', '.join(missing)} not cached in {self.name}; run `featx extract` with "
                f"--layers {','.join(missing)} (cached: {', '.join(self.layers) or 'none'})"
            )
        ordered = [name for name in self.layer_info if name in layers]
        blocks, slices, start = [], {}, 0
        for name in ordered:
            with h5py.File(self.layer_file(name), "r") as f:
                block = f["features"][()]
            blocks.append(block if rows is None else block[rows])
            slices[name] = (start, start + block.shape[1])
            start += block.shape[1]
        return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0], slices

    def write_layer(self, name: str, rows_source, n_rows: int, n_features: int, dtype, attrs: dict) -> None:
        """Publish one complete layer file; `rows_source(start, stop)` gives the rows to copy in blocks."""
        chunk_rows = max(1, min(n_rows, CHUNK_BYTES // (n_features * np.dtype(dtype).itemsize)))
        final = self.layer_file(name)
        final.parent.mkdir(exist_ok=True)
        with atomic_path(final) as tmp, _h5_write_errors(tmp):
            _reserve(tmp, n_rows * n_features * np.dtype(dtype).itemsize + HDF5_OVERHEAD)
            with h5py.File(tmp, "w") as f:
                ds = f.create_dataset("features", shape=(n_rows, n_features), dtype=dtype, chunks=(chunk_rows, n_features))
                for start in range(0, n_rows, chunk_rows * 16):
                    stop = min(n_rows, start + chunk_rows * 16)
                    ds[start:stop] = rows_source(start, stop)
                ds.attrs.update({"layer": name, "cache_key": self.key, **attrs})

    def update_index(self, **datasets) -> None:
        """Rewrite the (small) index atomically with some datasets replaced or added."""
        self.data.update(datasets)
        write_index(self.path, self.attrs, self.data, self.split_settings)

    def lock(self) -> EntryLock:
        return EntryLock(self.path)

    def remove_debris(self) -> None:
        """Delete temporary files of writers killed mid-write (`.<name>.<pid>.tmp`, `.work-done-*`).

        Call only while holding `lock()`: then no live process of this host is writing them.
        """
        for folder in (self.path, self.path / "layers", self.path / "work"):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                pid = tmp.name.rsplit(".", 2)[-2]
                if not (pid.isdigit() and _alive(int(pid))):
                    tmp.unlink(missing_ok=True)
        for done in self.path.glob(".work-done-*"):
            shutil.rmtree(done, ignore_errors=True)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    @property
    def modified(self) -> float:
        return max((p.stat().st_mtime for p in self.path.rglob("*.h5")), default=0.0)


def write_index(entry_path: Path, attrs: dict, data: dict, split_settings: dict) -> None:
    """The index is small: built in memory and written by Python, so a full disk is a plain OSError."""
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.attrs.update(attrs)
        for key, value in data.items():
            value = np.asarray(value)
            f.create_dataset(key, data=value.astype(object) if value.dtype.kind in "UO" else value,
                             dtype=STR if value.dtype.kind in "UO" else value.dtype)
        f["split"].attrs["settings"] = json.dumps(split_settings)
    with atomic_path(Path(entry_path) / "index.h5") as tmp:
        tmp.write_bytes(image.getvalue())


def create_entry(cache_dir: Path, key: str, backbone_name: str, attrs: dict, data: dict, split_settings: dict) -> CacheEntry:
    """Create the entry folder complete (index written) under a temporary name, then rename it into place."""
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{backbone_name}-{key[:12]}"
    if final.exists():
        return CacheEntry(final)
    staging = cache_dir / f".new-{key[:12]}-{os.getpid()}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "layers").mkdir(parents=True)
        write_index(staging, {"format_version": FORMAT_VERSION, "key": key, "created": time.time(), **attrs},
                    data, split_settings)
        try:
            os.rename(staging, final)
            fsync_dir(cache_dir)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process created it first: use theirs
            if not final.exists():
                raise
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):
            raise FeatxError(f"cache directory '{cache_dir}' is not a folder; pass --cache-dir to a writable folder") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise FeatxError(f"cache directory '{cache_dir}' is not writable; pass --cache-dir to a writable folder") from None
        raise RunFailed(f"cannot create a cache entry in '{cache_dir}' ({exc.strerror or exc}); "
                        "free disk space and re-run the same command") from None
    return CacheEntry(final)


def list_entries(cache_dir: Path | None = None) -> list[CacheEntry]:
    """Entries in a cache folder, most recently written first."""
    cache_dir = Path(cache_dir or default_cache_dir())
    if not cache_dir.is_dir():
        return []
    entries = [CacheEntry(p) for p in cache_dir.iterdir()
               if p.is_dir() and not p.name.startswith(".") and (p / "index.h5").exists()]  # .new-*: unfinished creation
    return sorted(entries, key=lambda e: e.modified, reverse=True)


def open_entry(cache: str | Path | CacheEntry | None = None, cache_dir: Path | None = None) -> CacheEntry:
    """An entry by folder path, by name or key prefix in the cache folder, or (None) the most recent one."""
    if isinstance(cache, CacheEntry):
        return cache
    if cache is not None and (Path(cache) / "index.h5").exists():
        return CacheEntry(Path(cache))
    entries = list_entries(cache_dir)
    if cache is None:
        complete = [e for e in entries if e.layers]
        if not complete:
            where = cache_dir or default_cache_dir()
            raise FeatxError(f"no extracted features in '{where}'; run `featx extract` first or pass --cache-dir")
        return complete[0]
    matches = [e for e in entries if e.name.startswith(str(cache)) or e.key.startswith(str(cache))]
    if len(matches) != 1:
        names = ", ".join(e.name for e in (matches or entries)) or "none"
        problem = "is ambiguous" if matches else "matches no cache entry"
        raise FeatxError(f"cache '{cache}' {problem}; choose one of: {names} (see `featx ls`)")
    return matches[0]


@contextmanager
def _h5_write_errors(path: Path):
    """A failed HDF5 write (disk full, file size limit) as a plain OSError; h5py raises RuntimeError on close."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        found = re.search(r"errno = (\d+)", str(exc))
        code = getattr(exc, "errno", None) or (int(found.group(1)) if found else errno.EIO)
        raise OSError(code, os.strerror(code), str(path)) from exc


def _reserve(path: Path, n_bytes: int) -> None:
    """Claim the disk space a layer file needs before HDF5 writes it: HDF5 does not fail cleanly on a full
    disk (its objects are left half-closed and can crash the process later), Python's fallocate does."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, n_bytes)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers from an earlier, failed write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return np.asarray([v.decode() if isinstance(v, bytes) else v for v in value])
    return value
