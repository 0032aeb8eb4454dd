"""Deleting a cache entry: never one being written, never half of one."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from featx.cache import safepath
from featx.cache.atomic import fsync_dir
from featx.cache.layout import REMOVED_ENTRY, staging_name
from featx.cache.lock import EntryLock
from featx.errors import RunFailed


def remove_entry(folder: Path) -> None:
    """Delete the entry in `folder` under its write lock (a running extract makes this a one-line error
    naming it); an entry whose index is unreadable can be removed too."""
    remove_entries([folder])


def remove_entries(folders: list[Path], before=None) -> None:
    """Delete entries once every one's write lock is held: a locked entry stops all of them, and `before`
    (called with every lock held: `featx rm` deletes its runs there) runs only if nothing is locked.

    Each folder is first renamed to a staging name (`.new-rm-<name>-<pid>@<host>`), so readers see it whole
    or not at all, and a removal killed midway is finished by the next extract's debris cleanup. An entry folder
    that is a link is refused before anything is deleted (its lock would be written through it).
    """
    folders = [Path(f) for f in folders]
    trash = []
    with ExitStack() as locks:
        for folder in folders:
            locks.enter_context(EntryLock(folder))
        if before is not None:
            before()
        for folder in folders:
            staging = folder.parent / staging_name(REMOVED_ENTRY, folder.name)
            try:
                safepath.rename(folder.parent, folder, staging)
                fsync_dir(folder.parent)
            except OSError as exc:
                raise RunFailed(
                    f"cannot remove {folder} ({exc.strerror or exc}); check the folder's permissions"
                ) from None
            trash.append(staging)
    for staging in trash:
        safepath.rmtree(staging.parent, staging, ignore_errors=True)
