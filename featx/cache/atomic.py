"""Crash-safe file publication: write beside the target, fsync, rename, fsync the folder.

A rename is atomic on POSIX file systems, so a reader (or a process killed at any instant) sees either
the old file or the complete new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(final: Path):
    """Yield a temporary path to write; on success it replaces `final` atomically, on error it is removed."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(final: Path, data, sort_keys: bool = True) -> None:
    """sort_keys=False keeps the order of `data` (e.g. classes in their label order)."""
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=sort_keys), encoding="utf-8")
