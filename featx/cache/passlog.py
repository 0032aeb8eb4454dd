"""An extraction pass in progress, kill-safe and resumable.

Design (write-ahead log): for the layers and views one pass computes, rows are appended batch by batch to
one raw file per (layer, view) in `<entry>/work/`. After each batch the raw files are fsynced, then `progress.json`
(format version, the pass's layers as an ordered list, committed row count, bad-file reasons, batch size)
is replaced by atomic rename. Only rows below the committed count exist as far as any reader is concerned:

* killed mid-append: the bytes past the committed count are truncated away on resume;
* killed mid-commit: the rename has either happened or not; both states are consistent;
* resumed: batches restart at the committed row with the same batch size, so every batch sees the same
  images as an uninterrupted run and the features are bit-identical.

One pass at a time: `start` refuses while another pass is pending (the caller finishes that one first),
so `work/` only ever holds one pass's files. Committed rows are never filled with anything but computed
features: a raw file shorter than the committed rows is never extended; that pass is restarted instead.

When all rows are committed, `finalize` copies each layer into its HDF5 file (published by atomic rename,
skipping layers already published by an earlier, interrupted finalize) and then removes the work folder.
This module is the only reader and writer of `work/`; `featx verify` and the CLI ask `summary`/`problems`.
A received cache may hold links there: raw files and the work folder are written only where no link is on the
way (featx.cache.safepath), and a pending pass with a linked raw file is refused in one line naming the link.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from featx.cache import safepath
from featx.cache.atomic import fsync_dir, write_json
from featx.cache.layout import WORK
from featx.cache.manifest import FORMAT_VERSION, check_version
from featx.cache.store import CacheEntry
from featx.errors import FeatxError, RunFailed
from featx.sources.views import IDENTITY

PROGRESS = "progress.json"


@dataclass
class PassSummary:
    """An interrupted pass as reports show it."""

    layers: list[str]
    committed_rows: int
    n_rows: int
    views: tuple = (IDENTITY,)

    def __str__(self) -> str:
        views = f" x {len(self.views)} view(s)" if self.views != (IDENTITY,) else ""
        return f"pass in progress at image {self.committed_rows}/{self.n_rows} ({len(self.layers)} layer(s){views})"


class PassLog:
    def __init__(self, entry: CacheEntry, state: dict):
        self.entry = entry
        self.dir = entry.path / WORK
        self.root = entry.path.parent  # the cache folder: no link below it is followed to write
        self.state = state
        self.info = {layer["name"]: layer for layer in state["layers"]}
        self._files = {}

    @classmethod
    def _read(cls, entry: CacheEntry) -> PassLog | None:
        """The recorded pass, or None when there is none; an unknown format version is a one-line error."""
        progress = entry.path / WORK / PROGRESS
        try:
            state = json.loads(safepath.check_read(entry.path.parent, progress).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RunFailed(f"'{progress}' is unreadable ({exc}); delete the work folder to restart the pass") from None
        check_version(state.get("format_version") if isinstance(state, dict) else None, progress)
        try:
            return cls(entry, state)
        except (KeyError, TypeError) as exc:
            raise RunFailed(f"'{progress}' lacks {exc}; delete the work folder to restart the pass") from None

    @classmethod
    def summary(cls, entry: CacheEntry) -> PassSummary | None:
        """The interrupted pass of an entry, for reports (`featx ls`, `featx verify`); None when there is none."""
        log = cls._read(entry)
        return log and PassSummary(log.layers, log.committed_rows, log.n_rows, log.views)

    @classmethod
    def pending(cls, entry: CacheEntry) -> PassLog | None:
        """The unfinished pass left by an interrupted run, if it can resume; None means start afresh."""
        try:
            log = cls._read(entry)
        except RunFailed:
            return None  # an unreadable record: its rows cannot be trusted, the pass restarts
        if log is None or log.n_rows != len(entry.labels) or any(n not in entry.layer_info for n in log.layers):
            return None
        for name, view in log.units:  # a raw file short of the committed rows (damaged): restart that pass
            raw = safepath.check_write(log.root, log._raw_path(name, view))  # a link there: refused, never followed
            if (raw.stat().st_size if raw.exists() else 0) < log.committed_rows * log._row_bytes(name):
                return None
        return log

    @classmethod
    def start(
        cls, entry: CacheEntry, layers: dict[str, dict], n_rows: int, batch_size: int, dtype: str, views=(IDENTITY,)
    ) -> PassLog:
        """layers : {name: {"n_features": int, ...attributes stored with the layer}}, in depth order (a
        LayerSelection's), recorded as given. views : the view names this pass computes for every one of them
        (every image is decoded once and its views run through the model together).

        Refuses while a resumable pass is pending: its raw files are the only copy of its committed rows.
        """
        if cls.pending(entry) is not None:
            raise RunFailed(
                f"an interrupted extraction pass in {entry.path / WORK} must finish before another "
                "starts; re-run the command that started it"
            )
        work = entry.path / WORK
        safepath.rmtree(entry.path.parent, work, ignore_errors=True)  # a link there: the link itself
        safepath.check_write(entry.path.parent, work).mkdir()
        state = {
            "format_version": FORMAT_VERSION,
            "layers": [{"name": n, **info} for n, info in layers.items()],
            "n_rows": n_rows,
            "batch_size": batch_size,
            "dtype": dtype,
            "committed_rows": 0,
            "errors": {},
            "views": list(views),
        }
        log = cls(entry, state)
        write_json(work / PROGRESS, state, root=entry.path.parent)
        fsync_dir(entry.path)
        return log

    @property
    def layers(self) -> list[str]:
        """In depth order, as recorded."""
        return list(self.info)

    @property
    def views(self) -> tuple[str, ...]:
        """The views computed, in the order the extractor yields them (the identity alone when not recorded)."""
        return tuple(self.state.get("views", [IDENTITY]))

    @property
    def units(self) -> list[tuple[str, str]]:
        """(layer, view) of every raw file, layers in depth order within each view."""
        return [(name, view) for view in self.views for name in self.layers]

    @property
    def n_rows(self) -> int:
        return self.state["n_rows"]

    @property
    def committed_rows(self) -> int:
        return self.state["committed_rows"]

    @property
    def batch_size(self) -> int:
        return self.state["batch_size"]

    def _raw_path(self, name: str, view: str = IDENTITY) -> Path:
        """Named by layer and view, never by position: a resumed run must append each to its own rows."""
        prefix = "" if view == IDENTITY else f"{quote(view, safe='')}@"
        return self.dir / f"{prefix}{quote(name, safe='')}.raw"

    def _row_bytes(self, name: str) -> int:
        return int(self.info[name]["n_features"]) * np.dtype(self.state["dtype"]).itemsize

    def open_for_append(self) -> None:
        """Open each raw file positioned at the committed end, cutting off any uncommitted tail.

        A raw file shorter than the committed rows is an error, never padded: padding would publish zeros.
        """
        for name, view in self.units:
            committed = self.committed_rows * self._row_bytes(name)
            try:
                fd = safepath.open_file(
                    self.root, self._raw_path(name, view), os.O_RDWR | (0 if committed else os.O_CREAT)
                )
            except FileNotFoundError:
                self.close()
                raise RunFailed(
                    f"raw rows of layer {_unit(name, view)} are missing from {self.dir}; "
                    "re-run the command to restart the pass"
                ) from None
            self._files[name, view] = fd
            size = os.fstat(fd).st_size
            if size < committed:
                self.close()
                raise RunFailed(
                    f"raw rows of layer {_unit(name, view)} hold {size // self._row_bytes(name)} of {self.committed_rows} "
                    f"committed rows in {self.dir}; re-run the command to restart the pass"
                )
            if size > committed:
                os.ftruncate(fd, committed)
            os.lseek(fd, committed, os.SEEK_SET)

    def append(self, outputs: dict[str, np.ndarray], errors: dict[int, str]) -> None:
        """Write one batch for every layer and view of the pass and commit it.

        outputs : {layer: (batch, n_features)} for an identity-only pass, else {layer: (batch, n_views, n_features)}
        in the order of `views`. errors : {row: reason}.
        """
        n, views = None, self.views
        for (name, view), fd in self._files.items():
            values = outputs[name]
            block = np.ascontiguousarray(
                values[:, views.index(view)] if values.ndim == 3 else values, dtype=self.state["dtype"]
            )
            n = block.shape[0]
            view = memoryview(block).cast("B")
            while view:
                view = view[os.write(fd, view) :]
        for fd in self._files.values():
            os.fsync(fd)
        self.state["committed_rows"] += n
        self.state["errors"].update({str(row): reason for row, reason in errors.items()})
        write_json(self.dir / PROGRESS, self.state, root=self.root)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files = {}

    def finalize(self) -> None:
        """Record bad files in the index, publish each layer's HDF5 file, then drop the work folder.

        The index goes first: a published layer file is served at once, so its bad rows must already be marked.
        """
        n_rows, dtype = self.n_rows, self.state["dtype"]
        if self.committed_rows != n_rows:
            raise RunFailed(
                f"the pass in {self.dir} has committed {self.committed_rows} of {n_rows} rows; "
                "re-run the command to resume it"
            )
        if "valid" not in self.entry.data:
            errors = np.asarray([self.state["errors"].get(str(row), "") for row in range(n_rows)], dtype=object)
            self.entry.update_index(valid=errors == "", errors=errors)
        for name, view in self.units:
            info = {k: v for k, v in self.info[name].items() if k != "name"}
            if self.entry.layer_file(name, view).exists():
                continue
            raw = np.memmap(
                safepath.check_read(self.root, self._raw_path(name, view)),
                dtype=dtype,
                mode="r",
                shape=(n_rows, info["n_features"]),
            )
            attrs = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in info.items() if v is not None}
            self.entry.write_layer(name, lambda a, b, raw=raw: raw[a:b], n_rows, info["n_features"], dtype, attrs, view)
            del raw
        done = self.entry.path / f".work-done-{os.getpid()}"
        safepath.rmtree(self.root, done, ignore_errors=True)
        safepath.rename(self.root, self.dir, done)  # one atomic step ends the pass (a partial rmtree could leave
        fsync_dir(self.entry.path)  # progress.json alone)
        safepath.rmtree(self.root, done)

    @classmethod
    def problems(cls, entry: CacheEntry) -> list[str]:
        """What would keep an interrupted pass from resuming exactly where it stopped, one line each."""
        try:
            log = cls._read(entry)
        except FeatxError as exc:
            return [str(exc)]
        if log is None:
            return []  # no pass, or one killed before its first record: the next run starts afresh
        try:
            return log._problems()
        except (KeyError, TypeError, ValueError) as exc:
            return [f"work/{PROGRESS} is malformed ({exc}); delete the work folder to restart the pass"]

    def _problems(self) -> list[str]:
        entry, committed, n_rows = self.entry, int(self.committed_rows), int(self.n_rows)
        batch_size, dtype = int(self.batch_size), np.dtype(self.state["dtype"])
        problems = []
        if n_rows != len(entry.labels):
            problems.append(f"interrupted pass is for {n_rows} images, the index has {len(entry.labels)}")
        if not 0 <= committed <= n_rows or (committed % batch_size and committed != n_rows):
            problems.append(
                f"interrupted pass has committed {committed} rows, not whole batches of {batch_size} out of {n_rows}"
            )
        if dtype != np.dtype(entry.settings["dtype"]):
            problems.append(f"interrupted pass stores {dtype}, the entry {entry.settings['dtype']}")
        unknown = [name for name in self.layers if name not in entry.layer_info]
        if unknown:
            problems.append(f"interrupted pass has unknown layer(s) {', '.join(unknown)}")
        late = [int(row) for row in self.state["errors"] if not 0 <= int(row) < committed]
        if late:
            problems.append(f"bad-file records for uncommitted rows {late[:5]}")
        if committed < n_rows:
            early = [_unit(name, view) for name, view in self.units if entry.layer_file(name, view).exists()]
            if early:
                problems.append(f"layer file(s) {', '.join(early)} published before their pass committed all rows")
        for name, view in self.units:
            problems += self._raw_problems(name, view, committed)
        return problems

    def _raw_problems(self, name: str, view: str, committed: int) -> list[str]:
        raw, row_bytes = self._raw_path(name, view), self._row_bytes(name)
        try:
            safepath.check_write(self.root, raw)
        except FeatxError as exc:
            return [f"interrupted pass: {exc}"]
        size = raw.stat().st_size if raw.exists() else 0
        if size < committed * row_bytes:
            return [
                f"interrupted pass: raw rows of {_unit(name, view)} hold {size // row_bytes} of {committed} committed rows"
            ]
        if not committed or self.entry.layer_file(name, view).exists():
            return []
        data = np.memmap(
            raw, dtype=self.state["dtype"], mode="r", shape=(committed, int(self.info[name]["n_features"]))
        )
        step = max(1, (16 << 20) // row_bytes)
        bad = [
            a + int(r)
            for a in range(0, committed, step)
            for r in np.flatnonzero(~np.isfinite(data[a : a + step]).all(axis=1))
        ]
        del data
        return [f"interrupted pass: NaN/Inf in committed rows {bad[:5]} of {_unit(name, view)}"] if bad else []


def _unit(name: str, view: str) -> str:
    """A layer as messages name it: `layer`, or `layer (view hflip)`."""
    return name if view == IDENTITY else f"{name} (view {view})"
