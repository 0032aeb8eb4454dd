"""An extraction pass in progress, kill-safe and resumable.

Design (write-ahead log): for the layers one pass computes, rows are appended batch by batch to one raw
file per layer in `<entry>/work/`. After each batch the raw files are fsynced, then `progress.json`
(committed row count, bad-file reasons, batch size) is replaced by atomic rename. Only rows below the
committed count exist as far as any reader is concerned:

* killed mid-append: the bytes past the committed count are truncated away on resume;
* killed mid-commit: the rename has either happened or not; both states are consistent;
* resumed: batches restart at the committed row with the same batch size, so every batch sees the same
  images as an uninterrupted run and the features are bit-identical.

When all rows are committed, `finalize` copies each layer into its HDF5 file (published by atomic rename,
skipping layers already published by an earlier, interrupted finalize) and then removes the work folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np

from featx.cache.atomic import fsync_dir, write_json
from featx.cache.store import CacheEntry


class PassLog:
    def __init__(self, entry: CacheEntry, state: dict):
        self.entry = entry
        self.dir = entry.path / "work"
        self.state = state
        self._files = {}

    @classmethod
    def pending(cls, entry: CacheEntry) -> PassLog | None:
        """The unfinished pass left by an interrupted run, if any."""
        progress = entry.path / "work" / "progress.json"
        if not progress.exists():
            return None
        log = cls(entry, json.loads(progress.read_text()))
        for name in log.layers:  # a raw file short of the committed rows (damaged, older layout): start afresh
            raw = log._raw_path(name)
            if (raw.stat().st_size if raw.exists() else 0) < log.committed_rows * log._row_bytes(name):
                return None
        return log

    @classmethod
    def start(cls, entry: CacheEntry, layers: dict[str, dict], n_rows: int, batch_size: int, dtype: str) -> PassLog:
        """layers : {name: {"n_features": int, ...attributes stored with the layer}}."""
        work = entry.path / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        state = {"layers": layers, "n_rows": n_rows, "batch_size": batch_size, "dtype": dtype,
                 "committed_rows": 0, "errors": {}}
        log = cls(entry, state)
        write_json(work / "progress.json", state)
        fsync_dir(entry.path)
        return log

    @property
    def layers(self) -> list[str]:
        """In depth order. Not the order of state["layers"]: progress.json is written with sorted keys."""
        known = [name for name in self.entry.layer_info if name in self.state["layers"]]
        return known + sorted(set(self.state["layers"]) - set(known))

    @property
    def committed_rows(self) -> int:
        return self.state["committed_rows"]

    @property
    def batch_size(self) -> int:
        return self.state["batch_size"]

    def _raw_path(self, name: str) -> Path:
        """Named by layer, never by position: a resumed run must append each layer to its own rows."""
        return self.dir / f"{quote(name, safe='')}.raw"

    def _row_bytes(self, name: str) -> int:
        return self.state["layers"][name]["n_features"] * np.dtype(self.state["dtype"]).itemsize

    def open_for_append(self) -> None:
        """Open each raw file positioned at the committed end, cutting off any uncommitted tail."""
        for name in self.layers:
            fd = os.open(self._raw_path(name), os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(fd, self.committed_rows * self._row_bytes(name))
            os.lseek(fd, 0, os.SEEK_END)
            self._files[name] = fd

    def append(self, outputs: dict[str, np.ndarray], errors: dict[int, str]) -> None:
        """Write one batch for every layer of the pass and commit it. errors : {row: reason}."""
        n = None
        for name, fd in self._files.items():
            block = np.ascontiguousarray(outputs[name], dtype=self.state["dtype"])
            n = block.shape[0]
            view = memoryview(block).cast("B")
            while view:
                view = view[os.write(fd, view):]
        for fd in self._files.values():
            os.fsync(fd)
        self.state["committed_rows"] += n
        self.state["errors"].update({str(row): reason for row, reason in errors.items()})
        write_json(self.dir / "progress.json", self.state)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files = {}

    def finalize(self) -> None:
        """Record bad files in the index, publish each layer's HDF5 file, then drop the work folder.

        The index goes first: a published layer file is served at once, so its bad rows must already be marked.
        """
        n_rows, dtype = self.state["n_rows"], self.state["dtype"]
        if "valid" not in self.entry.data:
            errors = np.asarray([self.state["errors"].get(str(row), "") for row in range(n_rows)], dtype=object)
            self.entry.update_index(valid=errors == "", errors=errors)
        for name in self.layers:
            info = self.state["layers"][name]
            if self.entry.layer_file(name).exists():
                continue
            raw = np.memmap(self._raw_path(name), dtype=dtype, mode="r", shape=(n_rows, info["n_features"]))
            attrs = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in info.items() if v is not None}
            self.entry.write_layer(name, lambda a, b: raw[a:b], n_rows, info["n_features"], dtype, attrs)
            del raw
        done = self.entry.path / f".work-done-{os.getpid()}"
        shutil.rmtree(done, ignore_errors=True)
        os.rename(self.dir, done)  # one atomic step ends the pass; a partial rmtree could leave progress.json alone
        fsync_dir(self.entry.path)
        shutil.rmtree(done)
