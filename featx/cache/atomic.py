"""Crash-safe file publication: write beside the target, fsync, rename, fsync the folder.

A rename is atomic on POSIX file systems, so a reader (or a process killed at any instant) sees either
the old file or the complete new one, never a half-written one. Given the `root` of the folder tree the file
lies in (a cache or runs folder), nothing is written through a link below it (featx.cache.safepath): the
folders on the way are checked, the temporary file is created anew (O_EXCL, O_NOFOLLOW), and the rename
replaces a link at the final name instead of following it.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from featx.cache import safepath


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: Path, root: Path | None = None):
    """Yield a temporary path to write; on success it replaces `final` atomically, on error it is removed.

    root : the cache or runs folder `final` lies in; no link below it is followed (None: a user's own output
    path, written where it leads)."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    if root is not None:
        safepath.check_write(root, final.parent)
    tmp.unlink(missing_ok=True)  # a leftover (or a link) of that name: removed, never followed
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(final: Path, data, sort_keys: bool = True, root: Path | None = None) -> None:
    """sort_keys=False keeps the order of `data` (e.g. classes in their label order); root as in atomic_path."""
    with atomic_path(final, root) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=sort_keys), encoding="utf-8")
