"""Content fingerprints of files: an image's (part of the cache key), a weights or model file's (part of the
backbone's description, checked before the file is read again)."""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from featx.progress import progress_bar

UNREADABLE = "unreadable"


def file_fingerprint(path: str) -> str:
    """Content hash of one file; an unreadable file gets a marker (it is reported as bad at decode)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a folder or FIFO (opening a FIFO would block forever)
            return f"{UNREADABLE}:not-a-file"
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        return f"{UNREADABLE}:{exc.errno}"
    return digest.hexdigest()


def fingerprint_files(paths: list[str], progress: bool = True) -> list[str]:
    """Hash files on a few threads (hashlib releases the GIL), keeping the input order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        bar = progress_bar(total=len(paths), desc="fingerprint", unit="file", enabled=progress, leave=False)
        try:
            fingerprints = []
            for fingerprint in pool.map(file_fingerprint, paths, chunksize=16):
                fingerprints.append(fingerprint)
                bar.update(1)
            return fingerprints
        finally:
            bar.close()
