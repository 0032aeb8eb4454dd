"""Deleting a cache entry: never one being written, never half of one."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from featx.cache.atomic import fsync_dir
from featx.cache.lock import EntryLock
from featx.errors import RunFailed


def remove_entry(folder: Path) -> None:
    """Delete the entry in `folder` under its write lock (a running extract makes this a one-line error
    naming it); an entry whose index is unreadable can be removed too.

    The folder is first renamed to a staging name (`.new-rm-<name>-<pid>@<host>`), so readers see it whole
    or not at all, and a removal killed midway is finished by the next extract's debris cleanup.
    """
    folder = Path(folder)
    trash = folder.parent / f".new-rm-{folder.name}-{os.getpid()}@{socket.gethostname()}"
    with EntryLock(folder):
        try:
            os.rename(folder, trash)
            fsync_dir(folder.parent)
        except OSError as exc:
            raise RunFailed(f"cannot remove {folder} ({exc.strerror or exc}); check the folder's permissions") from None
    shutil.rmtree(trash, ignore_errors=True)
