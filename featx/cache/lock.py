"""One writer per cache entry.

An OS file lock (flock) is released by the kernel when its process dies, however it dies, so a lock
left by a killed run is never stale: the next run simply gets it. The lock file also records who holds
it, for the message the second process prints. The entry folder and its `.lock` are opened without following
a link (a received cache's `.lock` linked to someone's file would otherwise be truncated): a link there is refused
in one line.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from featx.cache.safepath import open_file
from featx.errors import FeatxError


class EntryLock:
    def __init__(self, entry_path: Path):
        self.path = Path(entry_path) / ".lock"
        self._fd = None

    def __enter__(self):
        try:
            fd = open_file(self.path.parent.parent, self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise FeatxError(
                f"cannot lock cache entry {self.path.parent} ({exc.strerror}): the cache is not writable; "
                "pass --cache-dir to a writable folder"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise FeatxError(
                f"cache entry {self.path.parent.name} is being written by {holder}; wait for that run to finish "
                "(a killed run releases the lock by itself)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
            return f"pid {info['pid']} on {info['host']} since {since}"
        except (ValueError, KeyError):
            return "another process"


def process_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (another user's counts: it may be writing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
