"""The HDF5 store. A `Cache` is one folder of entries (one backbone + settings + image list each); the names of its
folders and files are featx.cache.layout's:

    <cache root>/
        <backbone>-<key[:12]>/
            index.h5            EntryManifest attributes; paths, labels, fingerprints, split, valid, errors;
                                its HDF5 user block holds the blake2b digest of the rest of its bytes
            layers/<layer>.h5   one dataset `features` (n_images, n_features), contiguous, uncompressed,
                                with the format version, the blake2b digest of the entry key, view, layer
                                name and rows, and a `binding` of key, view, name and digest as attributes;
                                its HDF5 user block holds the digest of its metadata (featx.cache.layerfile)
            views/<view>/<layer>.h5   the same for an augmented view of every image (featx.sources.views);
                                the identity view is layers/
            work/               an extraction pass in progress (see featx.cache.passlog)
            .lock               held by the one process writing this entry
        .new-<key[:12]>-<pid>@<host>  an entry being created (removed when its creator died on this host)
        runs/, reports/         experiment logs and reports (featx.experiments)

Every file here is published by atomic rename (featx.cache.atomic), and a layer file only once all its
rows are committed, so a reader never sees partial data and a killed run never leaves a broken file.
Opening an entry checks the bytes of its index against their digest before h5py parses them (a damaged HDF5
file can crash the HDF5 library), then re-hashes it: an index changed in any byte, or that no longer matches its
key, is refused. Opening a layer file checks its metadata against their digest before libhdf5 parses any of it
(featx.cache.layerfile), then its binding: a file copied over another layer's, or moved to another view's
folder, is refused (`featx verify` also re-hashes its rows).

A cache may come from someone else: nothing here writes, truncates, renames or deletes through a symbolic link
below the cache folder, and nothing is read through one that leads out of it (featx.cache.safepath).
"""

from __future__ import annotations

import copy
import errno
import hashlib
import io
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from featx.cache import layout, safepath
from featx.cache.atomic import atomic_path, fsync_dir
from featx.cache.key import cache_key
from featx.cache.layerfile import open_layer_file, write_layer_file
from featx.cache.lock import EntryLock, process_alive
from featx.cache.manifest import FORMAT_VERSION, Digest, EntryManifest, check_version, digest_array, digest_bytes
from featx.errors import FeatxError, RunFailed
from featx.sources.splits import SPLITS
from featx.sources.views import IDENTITY, VIEWS_VERSION, is_view, sort_views

STR = h5py.string_dtype()
REQUIRED = ("paths", "labels", "fingerprints", "split")
RANDOM_WEIGHTS = "[random weights]"
NOT_ENTRIES = ("runs", "reports")
INDEX_MAGIC, USER_BLOCK = b"featx index\n", 512  # index.h5 starts with a user block: magic, then JSON {digest}

__all__ = ["FORMAT_VERSION", "Cache", "CacheEntry"]


class Cache:
    """A cache folder, resolved once (argument, else $FEATX_CACHE, else ./cache); entries, runs and reports live in it.

    runs_dir : keep the runs log, run folders and reports in this folder instead (<runs_dir>/reports), e.g. for
        a read-only cache. The only place where that choice is made: experiments ask `runs_dir`/`reports_dir`.
    """

    def __init__(self, root: str | Path | None = None, *, runs_dir: str | Path | None = None):
        self.root = Path(root if root is not None else os.environ.get("FEATX_CACHE", "cache"))
        self._runs = Path(runs_dir) if runs_dir else None

    @classmethod
    def resolve(cls, cache: Cache | str | Path | None = None) -> Cache:
        """A front door's `cache` argument as a Cache: one given as it is, a folder, or None (the default folder)."""
        return cache if isinstance(cache, Cache) else cls(cache)

    def __repr__(self) -> str:
        return f"Cache('{self.root}'" + (f", runs_dir='{self._runs}')" if self._runs else ")")

    def __eq__(self, other) -> bool:
        return isinstance(other, Cache) and (self.root, self._runs) == (other.root, other._runs)

    @property
    def runs_dir(self) -> Path:
        """The runs log and run folders: <root>/runs, or the runs_dir given. A link at <root>/runs is refused in
        one line (featx.cache.safepath.LinkRefused): runs are written, and deleted, only in a real folder."""
        return self._runs or safepath.check_write(self.root, self.root / "runs")

    @property
    def reports_dir(self) -> Path:
        """Compare tables, t-SNE plots: <root>/reports, or <runs_dir>/reports; a link there is refused likewise."""
        tree = self._runs or self.root
        return safepath.check_write(tree, tree / "reports")

    def with_runs_dir(self, runs_dir: str | Path | None) -> Cache:
        """This cache with its runs and reports in `runs_dir` (None: unchanged)."""
        return self if not runs_dir else Cache(self.root, runs_dir=runs_dir)

    def _at(self, root: Path) -> Cache:
        """The Cache of an entry folder's parent: this one, or another root keeping this one's runs location."""
        return self if Path(root) == self.root else Cache(root, runs_dir=self._runs)

    def folders(self) -> list[Path]:
        """Folders that are (or claim to be) entries: not runs/, reports/ or dot folders (.new-*: being created)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p
            for p in self.root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and p.name not in NOT_ENTRIES
            and ((p / layout.INDEX).exists() or (p / layout.LAYERS).is_dir())
        )

    def scan(self) -> list[tuple[Path, CacheEntry | None, str]]:
        """(folder, entry or None, problem) for every entry folder, most recent first; one bad index spoils nothing else."""
        found = []
        for folder in self.folders():
            try:
                found.append((folder, CacheEntry(folder, self), ""))
            except FeatxError as exc:
                found.append((folder, None, str(exc)))
        return sorted(found, key=lambda item: _modified(item[0]), reverse=True)

    def entries(self) -> list[CacheEntry]:
        """The readable entries, most recently written first (`scan` also lists the unreadable ones)."""
        return [entry for _, entry, _ in self.scan() if entry is not None]

    def open(self, spec: str | Path | CacheEntry | None = None) -> CacheEntry:
        """An entry by folder path, by name or key prefix, or (None) the most recent one with layers.

        The entry's `cache` is this one (an entry folder elsewhere keeps its own root and takes this cache's runs
        location), so its runs and reports are asked of `entry.cache`. An entry passed in keeps its own Cache,
        runs location included, unless this cache names a runs_dir.
        """
        if isinstance(spec, CacheEntry):
            return spec if self._runs is None else spec.in_cache(spec.cache.with_runs_dir(self._runs))
        folder = self.find(spec)
        return CacheEntry(folder, self._at(folder.parent))

    def open_all(self, entries) -> list[CacheEntry]:
        """The entries a verb reads: one for a single spec (as `open`), each of a list or tuple of specs (features
        side by side, row-aligned by image); an entry named twice is an error."""
        opened = [self.open(e) for e in entries] if isinstance(entries, (list, tuple)) else [self.open(entries)]
        if not opened:
            raise FeatxError("no cache entries given; name at least one with --entry")
        names = [e.name for e in opened]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise FeatxError(f"cache entry {twice[0]} is given twice; name each entry once")
        return opened

    def find(self, spec: str | Path | None = None) -> Path:
        """The folder `open(spec)` opens. Matching looks at folder names (they end with the key's first 12
        characters), so no index is read; a longer key prefix is checked against the one candidate's key."""
        if spec is not None and (Path(spec) / layout.INDEX).exists():
            return Path(spec)
        folders = self.folders()
        if spec is None:
            complete = [f for f in folders if layout.has_layer_files(f)]
            if not complete:
                raise FeatxError(
                    f"no extracted features in '{self.root}'; run `featx extract` first or pass --cache-dir"
                )
            return max(complete, key=_modified)
        spec = str(spec)
        matches = [f for f in folders if f.name.startswith(spec) or _key_matches(f, spec)]
        if not matches and Path(spec).is_dir() and (Cache(spec).folders() or (Path(spec) / "runs").is_dir()):
            raise FeatxError(
                f"'{spec}' is a cache folder, not a cache entry: pass it as --cache-dir {spec} "
                "(and name an entry from `featx ls --cache-dir "
                f"{spec}`, or none for the most recent)"
            )
        if len(matches) != 1:
            names = ", ".join(f.name for f in (matches or folders)) or "none"
            problem = "is ambiguous" if matches else "matches no cache entry"
            raise FeatxError(f"cache '{spec}' {problem}; choose one of: {names} (see `featx ls`)")
        return matches[0]

    def create(self, manifest: EntryManifest, data: dict) -> CacheEntry:
        """The entry for `manifest.key`: the existing one, or a new folder written complete under a staging
        name (`.new-<key[:12]>-<pid>@<host>`) and renamed into place."""
        final = self.root / layout.entry_name(manifest.settings["backbone"], manifest.key)
        self.remove_debris()
        if safepath.check_read(self.root, final).exists():  # a link there leading out, or to nothing: refused
            return CacheEntry(final, self)
        staging = self.root / layout.staging_name(layout.NEW_ENTRY, layout.key_prefix(manifest.key))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            safepath.rmtree(self.root, staging, ignore_errors=True)
            safepath.makedirs(self.root, layout.layer_folder(staging))
            write_index(staging, manifest, data)
            try:
                safepath.rename(self.root, staging, final)
                fsync_dir(self.root)
            except OSError:
                safepath.rmtree(self.root, staging, ignore_errors=True)  # another process created it first: theirs
                if not final.exists():
                    raise
        except OSError as exc:
            safepath.rmtree(self.root, staging, ignore_errors=True)
            raise _creation_error(self.root, exc) from None
        return CacheEntry(final, self)

    def remove_debris(self) -> None:
        """Delete `.new-*` staging folders whose creator, a process of this host, is dead, and inside every entry
        that no process is writing (its lock is free) the debris of killed writers (`CacheEntry.remove_debris`).

        Another host's staging folder (a shared file system) or a live process's is never touched.
        """
        for staging, _ in layout.orphaned(self.root, layout.NEW_ENTRY):  # entries being created or removed
            safepath.rmtree(self.root, staging, ignore_errors=True)  # a link of that name: the link itself
        for folder in self.folders():  # an entry's debris, under its lock: then no live process is writing it
            if _entry_debris(folder):
                try:
                    with EntryLock(folder):
                        _remove_entry_debris(folder)
                except FeatxError:
                    pass  # being written (that writer removes it) or not writable: left as it is


def _key_matches(folder: Path, spec: str) -> bool:
    """A key prefix: up to 12 characters the folder name tells; a longer one is checked against the stored key."""
    short = layout.parse_entry_name(folder.name).key_prefix
    if len(spec) <= len(short):
        return short.startswith(spec)
    if not spec.startswith(short):
        return False
    try:
        key = read_index(folder / layout.INDEX)[0].get("key")
    except FeatxError:
        return False
    return (key.decode(errors="replace") if isinstance(key, bytes) else str(key)).startswith(spec)


def _modified(folder: Path) -> float:
    """The newest modification time of the folder's .h5 files (a link's own: links are not followed)."""
    return max((_lstat(p).st_mtime for p in folder.rglob("*.h5")), default=0.0)


def _lstat(path: Path) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError:  # removed meanwhile
        return os.stat_result((0,) * 10)


def _creation_error(root: Path, exc: OSError) -> FeatxError:
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return FeatxError(f"cache directory '{root}' is not a folder; pass --cache-dir to a writable folder")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FeatxError(f"cache directory '{root}' is not writable; pass --cache-dir to a writable folder")
    return RunFailed(
        f"cannot create a cache entry in '{root}' ({exc.strerror or exc}); free disk space and re-run the same command"
    )


class CacheEntry:
    """A cache entry's index held in memory, and reads of its layers.

    Opening checks the bytes of the index against their digest (any edit, attributes included, is refused: class
    names, layer info, backbone arguments, split settings, description), then against its key and the digests of
    its arrays: an edited or damaged index is refused with one line, so experiments never train on labels, class
    names, layers or images the writer did not write. `check=False` skips the second part, for `featx verify` to
    list what is wrong; an index whose bytes changed is never parsed.
    """

    def __init__(self, path: Path, cache: Cache | None = None, *, check: bool = True):
        self.path = Path(path)
        self.cache = cache or Cache(self.path.parent)
        index = safepath.check_read(self.path.parent, self.path / layout.INDEX)  # no link leading out of the cache
        attrs, self.data, sealed = read_index(index)
        self.manifest = EntryManifest.from_attrs(attrs, index)
        if not sealed:  # written as this format but without its digest: nothing vouches for it
            raise RunFailed(f"'{index}' has no digest record; delete that cache entry and re-run `featx extract`")
        if check:
            problems = self.index_problems()
            if problems:
                raise RunFailed(
                    f"'{index}' was modified or damaged since it was written ({problems[0]}); run "
                    "`featx verify` and re-extract into a fresh --cache-dir"
                )

    def in_cache(self, cache: Cache) -> CacheEntry:
        """This entry as seen from `cache` (same root, perhaps another runs location); the index is not re-read."""
        if cache == self.cache:
            return self
        entry = copy.copy(self)
        entry.cache = cache
        return entry

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def attrs(self) -> dict:
        return asdict(self.manifest)

    @property
    def key(self) -> str:
        return self.manifest.key

    @property
    def settings(self) -> dict:
        return self.manifest.settings

    @property
    def layer_info(self) -> dict:
        return self.manifest.layer_info

    @property
    def class_names(self) -> list[str]:
        return self.manifest.class_names

    @property
    def backbone_args(self) -> dict:
        return self.manifest.backbone_args

    @property
    def split_settings(self) -> dict:
        return self.manifest.split_settings

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
        """Layers fully stored (for the identity view), in the backbone's depth order."""
        return self.view_layers(IDENTITY)

    def view_layers(self, view: str) -> list[str]:
        """Layers fully stored for `view`, in depth order."""
        return [name for name in self.layer_info if self.layer_file(name, view).exists()]

    @property
    def views(self) -> list[str]:
        """Views with at least one stored layer: the identity (when it has layers), then the augmented ones."""
        stored = [v for v in layout.view_names(self.path) if is_view(v) and layout.has_layer_files(self.path, v)]
        return ([IDENTITY] if self.layers else []) + sort_views(stored)

    def layer_file(self, name: str, view: str = IDENTITY) -> Path:
        """Where layer `name` of `view` is published (featx.cache.layout.layer_file)."""
        return layout.layer_file(self.path, name, view)

    def stored_files(self) -> list[layout.LayerFile]:
        """(view, layer name, path) of every published layer file in this entry's folder, the identity's first, then
        each views/ folder's; as found on disk, so perhaps of a layer or view this entry does not know
        (`featx verify` reports those)."""
        return layout.layer_files(self.path)

    def index_problems(self) -> list[str]:
        """What is wrong with the index (cheap: its arrays are small), one line each; [] means sound."""
        missing = [k for k in REQUIRED if k not in self.data]
        if missing:
            return [f"index lacks dataset(s) {', '.join(missing)}"]
        not_lists = [k for k, v in self.data.items() if np.ndim(v) != 1]
        if not_lists:
            return [f"index dataset(s) {', '.join(not_lists)} are not one-dimensional"]
        n = len(self.data["paths"])
        lengths = {k: len(v) for k, v in self.data.items()}
        if any(length != n for length in lengths.values()):
            return [f"index datasets have different lengths {lengths}"]
        problems = [] if n else ["the image list is empty"]
        changed = [
            k
            for k in sorted(set(self.data) | set(self.manifest.digests))
            if k not in self.data or self.manifest.digests.get(k) != digest_array(self.data[k])
        ]
        if changed:
            problems.append(f"index array(s) {', '.join(changed)} changed since they were written (digest mismatch)")
        try:
            key = cache_key(self.settings, self.relpaths, list(self.data["fingerprints"]), self.labels)
        except (TypeError, ValueError):  # labels that are not integers
            key = None
        key_matches = key == self.key
        if not key_matches:
            problems.append(
                "settings hash mismatch: the stored settings or image list do not hash to the entry's key "
                "(edited or corrupted index)"
            )
        elif layout.parse_entry_name(self.name).key_prefix != layout.key_prefix(self.key):
            problems.append(f"folder name does not end with the key prefix {layout.key_prefix(self.key)}")
        labels = np.asarray(self.labels)
        if labels.dtype.kind not in "iu":
            problems.append(f"labels are of type {labels.dtype}, not integers")
        elif labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            problems.append(f"labels outside 0..{len(self.class_names) - 1} ({len(self.class_names)} classes)")
        bad_split = sorted(set(map(str, self.split)) - set(SPLITS))
        if bad_split:
            problems.append(f"split has value(s) {bad_split} outside {', '.join(SPLITS)}")
        if ("valid" in self.data) != ("errors" in self.data):
            problems.append("index has only one of valid/errors")
        elif "valid" in self.data and not np.array_equal(
            np.asarray(self.valid, bool), np.asarray(self.data["errors"]) == ""
        ):
            problems.append("valid rows do not match the recorded bad-file errors")
        return problems

    @contextmanager
    def open_layer(self, name: str, view: str = IDENTITY):
        """The layer's rows and attributes (a featx.cache.layerfile.LayerData: `ds[()]`, `ds[a:b]`, shape, dtype,
        attrs), the file checked before libhdf5 reads a byte of it, then its header (version, shape, dtype, view)
        and binding; any read error is one line."""
        path = self.layer_file(name, view)
        try:
            with open_layer_file(path, self.path.parent) as ds:
                check_version(ds.attrs.get("format_version"), path)
                check_view(ds.attrs, view, path)
                if self.header_problems(name, view, ds):  # what is left: shape, dtype or key
                    raise RunFailed(
                        f"layer file '{path}' holds {ds.shape} {ds.dtype} of key {ds.attrs.get('cache_key')}, "
                        f"expected {self.layer_shape(name)} {self.settings['dtype']} of this entry; run "
                        "`featx verify` and re-extract"
                    )
                if not self.bound(ds.attrs, name, view):
                    raise RunFailed(not_bound_message(path, name, view))
                yield ds
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise RunFailed(
                f"layer file '{path}' cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                "run `featx verify` and re-extract"
            ) from None

    def layer_shape(self, name: str) -> tuple[int, int]:
        """(rows, features) of every file of layer `name`: one row per image, whatever view."""
        return len(self.labels), int(self.layer_info[name]["n_features"])

    @property
    def dtype(self) -> np.dtype:
        """The dtype features are stored in."""
        return np.dtype(self.settings["dtype"])

    def header_problems(self, name: str, view: str, ds) -> list[str]:
        """What a layer file's `features` dataset header says wrong for layer `name` of `view`, one line each ([]:
        sound): one row per image of the layer's width, this format version, the entry's dtype and key, the view
        (check_view). Cheap: no rows are read. `open_layer` refuses a file with any; `featx verify` lists them."""
        (n, width), dtype = self.layer_shape(name), self.dtype
        if ds.shape != (n, width):
            return [f"shape {ds.shape}, expected ({n}, {width}) (one row per image)"]
        problems = []
        try:
            check_version(ds.attrs.get("format_version"), ds.path)
        except FeatxError:
            problems.append(f"format version {ds.attrs.get('format_version')} is not {FORMAT_VERSION}")
        if ds.dtype != dtype:
            return problems + [f"dtype {ds.dtype}, expected {dtype}"]
        if ds.attrs.get("cache_key") != self.key:
            problems.append("belongs to another cache key")
        try:
            check_view(ds.attrs, view, ds.path)
        except FeatxError as exc:
            problems.append(str(exc))
        return problems

    def bound(self, attrs, name: str, view: str = IDENTITY) -> bool:
        """Whether a layer file's attributes say it was published as layer `name` of `view` of this entry (cheap:
        no rows are read; `featx verify` also re-hashes the rows, the digest of which the binding covers)."""
        return str(attrs.get("binding")) == layer_binding(self.key, name, view, attrs.get("digest"))

    def feature_size(self, name: str) -> int:
        with self.open_layer(name) as ds:
            return int(ds.shape[1])

    def read(self, layers, rows: np.ndarray | None = None, *, view: str = IDENTITY) -> tuple[np.ndarray, dict]:
        """Concatenate the given layers of one view, in the order given, into X of shape (n_rows, n_features).

        layers : names, e.g. a LayerSelection's (in depth order: `featx.load` passes those).
        view : a view name (featx.sources.views); the identity view by default.
        Returns X and {layer: (start, stop)} column slices. Only the named layer files are opened. Their headers
        are checked, not their digests: hashing would halve the read rate (`featx verify` recomputes them).
        """
        missing = [name for name in layers if name not in self.layer_info or not self.layer_file(name, view).exists()]
        if missing:
            where = "" if view == IDENTITY else f" for view {view}"
            views = "" if view == IDENTITY else " and the --views that name it"
            raise FeatxError(
                f"layer(s) {', '.join(missing)} not cached{where} in {self.name}; run `featx extract` with "
                f"--layers {','.join(missing)}{views} (cached: {', '.join(self.view_layers(view)) or 'none'})"
            )
        blocks, slices, start = [], {}, 0
        for name in layers:
            with self.open_layer(name, view) as ds:
                block = ds[()]
            blocks.append(block if rows is None else block[rows])
            slices[name] = (start, start + block.shape[1])
            start += block.shape[1]
        return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0], slices

    def write_layer(
        self, name: str, rows_source, n_rows: int, n_features: int, dtype, attrs: dict, view: str = IDENTITY
    ) -> None:
        """Publish one complete layer file of one view; `rows_source(start, stop)` gives the rows to copy in blocks.

        The digest of the rows is computed from the very blocks written, and stored with them; it starts from
        the entry key, view and layer name (`layer_digest`), so it also says whose rows they are.
        """
        block_rows = max(1, min(n_rows, (16 << 20) // (n_features * np.dtype(dtype).itemsize)))
        final = self.layer_file(name, view)
        safepath.makedirs(self.path.parent, final.parent)
        if view != IDENTITY:
            attrs = {**attrs, "view": view, "views_version": VIEWS_VERSION}
        with atomic_path(final, self.path.parent) as tmp, write_layer_file(tmp, n_rows, n_features, dtype) as out:
            digest = layer_digest(self.key, name, view)
            for start in range(0, n_rows, block_rows):
                block = np.ascontiguousarray(rows_source(start, min(n_rows, start + block_rows)), dtype=dtype)
                out.write(start, block)
                digest.update(block)
            out.finish(
                {
                    **attrs,
                    "layer": name,
                    "cache_key": self.key,
                    "digest": digest.hexdigest(),
                    "binding": layer_binding(self.key, name, view, digest.hexdigest()),
                    "format_version": FORMAT_VERSION,
                }
            )

    def update_index(self, split_settings: dict | None = None, **datasets) -> None:
        """Rewrite the (small) index atomically with some datasets replaced or added."""
        self.data.update(datasets)
        if split_settings is not None:
            self.manifest.split_settings = split_settings
        write_index(self.path, self.manifest, self.data)

    def lock(self) -> EntryLock:
        return EntryLock(self.path)

    def remove_debris(self) -> None:
        """Delete temporary files of writers killed mid-write (`.<name>.<pid>.tmp`) and `.work-done-<pid>` copies
        of a finished pass whose removal was killed.

        Call only while holding `lock()`: then no live process is writing them (`Cache.remove_debris` takes the
        lock of every entry with debris that no process is writing).
        """
        _remove_entry_debris(self.path)

    def summary(self) -> dict:
        """What `featx info` shows: entry, key, data, settings, preprocessing_note, split {name: valid images},
        split_settings, classes, layers (DataFrame: layer, kind, features; depth order), views {augmented view:
        [layers]}, bad_files {path: reason}."""
        import pandas as pd

        from featx.backbones import preprocessing_note

        splits, counts = np.unique(self.split[self.valid], return_counts=True)
        layers = pd.DataFrame(
            [{"layer": n, "kind": self.layer_info[n]["kind"], "features": self.feature_size(n)} for n in self.layers],
            columns=["layer", "kind", "features"],
        )
        return {
            "entry": str(self.path),
            "key": self.key,
            "data": self.data_label,
            "settings": dict(self.settings),
            "preprocessing_note": preprocessing_note(self.settings["preprocessing"], self.backbone_args["preprocess"]),
            "split": {str(s): int(c) for s, c in zip(splits, counts)},
            "split_settings": self.split_settings,
            "classes": list(self.class_names),
            "layers": layers,
            "bad_files": self.errors,
            "views": {view: self.view_layers(view) for view in self.views if view != IDENTITY},
        }

    def split_differs(self, images) -> bool:
        """Whether an ImageSet's split (settings or rows) is not the one stored: extract then rewrites it."""
        return images.split_settings != self.split_settings or not np.array_equal(images.split, self.split)

    @property
    def random_weights(self) -> bool:
        """Extracted with `--weights none`: its numbers say nothing about a pretrained backbone."""
        return self.backbone_args.get("weights") in (None, "none")

    @property
    def data_label(self) -> str:
        """The data the entry was extracted from, flagged [random weights] where that applies: every listing
        and fit line says which data its numbers come from."""
        return self.manifest.description + (f" {RANDOM_WEIGHTS}" if self.random_weights else "")

    def size_bytes(self) -> int:
        """Bytes of the entry's files; crash debris, the lock (dot names) and links do not count."""
        return sum(
            info.st_size
            for p in self.path.rglob("*")
            if stat.S_ISREG((info := _lstat(p)).st_mode)
            and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
        )

    @property
    def modified(self) -> float:
        return _modified(self.path)


def check_view(attrs, view: str, path) -> None:
    """A view's layer file names its view and the view pipeline's version; the identity's names none."""
    found = attrs.get("view", IDENTITY)
    version = attrs.get("views_version") if found != IDENTITY else VIEWS_VERSION
    if found != view or version is None or int(version) != VIEWS_VERSION:
        what = "no views version" if version is None else f"views version {int(version)}"
        raise RunFailed(
            f"layer file '{path}' holds view {found} of {what}, expected {view} of "
            f"version {VIEWS_VERSION}; delete that file (or its views folder) and re-run `featx extract`"
        )


def write_index(entry_path: Path, manifest: EntryManifest, data: dict) -> None:
    """The index is small: built in memory and written by Python, so a full disk is a plain OSError.
    The manifest's digests are set here, from the arrays written; the user block gets the digest of all the
    other bytes (`read_index` checks it before parsing any of them)."""
    manifest.digests = {k: digest_array(v) for k, v in data.items()}
    image = io.BytesIO()
    with h5py.File(image, "w", userblock_size=USER_BLOCK) as f:
        f.attrs.update(manifest.to_attrs())
        for key, value in data.items():
            value = np.asarray(value)
            f.create_dataset(
                key,
                data=value.astype(object) if value.dtype.kind in "UO" else value,
                dtype=STR if value.dtype.kind in "UO" else value.dtype,
            )
    body = image.getvalue()[USER_BLOCK:]
    record = INDEX_MAGIC + json.dumps({"format_version": FORMAT_VERSION, "digest": _index_digest(body)}).encode()
    with atomic_path(Path(entry_path) / layout.INDEX, Path(entry_path).parent) as tmp:
        tmp.write_bytes(record.ljust(USER_BLOCK, b"\0") + body)


class IndexChanged(RunFailed):
    """index.h5's bytes no longer match the digest its writer stored."""


def read_index(index: Path) -> tuple[dict, dict, bool]:
    """(attributes, arrays, sealed) of an index.h5, its bytes read once and checked against their digest before
    h5py parses them; sealed : whether it has a digest record (an index of format 3 or later always has one).

    An index without a record (an older format, or plain garbage) is parsed for what it says it is. Raises
    FeatxError for a record of another format version, IndexChanged when the bytes changed, RunFailed when they
    cannot be read or parsed.
    """
    try:
        image = index.read_bytes()
    except OSError as exc:
        raise RunFailed(
            f"'{index}' cannot be read ({exc.strerror or exc}); run `featx verify` and re-extract"
        ) from None
    sealed = image.startswith(INDEX_MAGIC)
    if sealed:
        try:
            record = json.loads(image[len(INDEX_MAGIC) : USER_BLOCK].rstrip(b"\0"))
        except ValueError:
            record = None
        if isinstance(record, dict) and "format_version" in record:  # a newer featx may seal differently
            check_version(record["format_version"], index)
        if not isinstance(record, dict) or record.get("digest") != _index_digest(image[USER_BLOCK:]):
            raise IndexChanged(
                f"'{index}' was modified or damaged since it was written (its bytes no longer match "
                "their digest); run `featx verify` and re-extract into a fresh --cache-dir"
            )
    try:
        with h5py.File(io.BytesIO(image), "r") as f:
            return dict(f.attrs), {k: _decode(f[k][()]) for k in f}, sealed
    except Exception as exc:  # noqa: BLE001  h5py raises almost anything (TypeError, ...) for a damaged file
        raise RunFailed(f"'{index}' cannot be read ({_first_line(exc)}); run `featx verify` and re-extract") from None


def _index_digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def layer_digest(key: str, name: str, view: str = IDENTITY) -> Digest:
    """The Digest a layer file's rows are fed to, primed with the format version, entry key, view and layer name:
    the same rows copied over another layer's file, or moved to another view's folder, no longer match."""
    digest = Digest()
    digest.update(np.frombuffer(json.dumps(["layer", FORMAT_VERSION, key, view, name]).encode(), np.uint8))
    return digest


def layer_binding(key: str, name: str, view: str, digest) -> str:
    """What ties a layer file to its place, checked whenever it is opened: a hash of the entry key, view, layer
    name and the file's stored digest (so any of them changed, or the file put elsewhere, fails the check)."""
    text = json.dumps(["binding", FORMAT_VERSION, key, view, name, str(digest)])
    return digest_bytes([np.frombuffer(text.encode(), np.uint8)])


def not_bound_message(path, name: str, view: str) -> str:
    what = name if view == IDENTITY else f"{name} of view {view}"
    return (
        f"layer file '{path}' was not published as layer {what} of this entry (copied, moved or edited); "
        "run `featx verify` and re-extract"
    )


def _entry_debris(folder: Path) -> list[Path]:
    """Leftovers of killed writers in an entry folder: `.<name>.<pid>.tmp` files and `.work-done-<pid>` folders.
    Folders reached through a link are not looked into (nothing in them is the entry's)."""
    if safepath.is_link(folder):
        return []
    found = list(folder.glob(".work-done-*"))
    for sub in (folder, folder / layout.WORK, *(path for _, path in layout.layer_folders(folder))):
        try:
            safepath.check_write(folder, sub)
        except safepath.LinkRefused:
            continue
        found += list(sub.glob(".*.tmp")) if sub.is_dir() else []
    return found


def _remove_entry_debris(folder: Path) -> None:
    """Remove `_entry_debris`, the temporary files of live processes of this host excepted; call under the lock.
    A link among them is removed itself, never followed."""
    for path in _entry_debris(folder):
        if path.name.startswith(".work-done-"):
            safepath.rmtree(folder, path, ignore_errors=True)
            continue
        pid = path.name.rsplit(".", 2)[-2]
        if not (pid.isdigit() and _alive(int(pid))):
            safepath.remove(folder, path)


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers from an earlier, failed write
    return process_alive(pid)


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return np.asarray([v.decode() if isinstance(v, bytes) else v for v in value])
    return value
