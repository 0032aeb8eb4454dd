"""The cache key: a hash of everything that changes the numbers, so a cache is never served stale."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

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
        return list(tqdm(pool.map(file_fingerprint, paths, chunksize=16), total=len(paths), unit="file",
                         desc="fingerprint", disable=not progress, leave=False))


def cache_key(settings: dict, relpaths: list[str], fingerprints: list[str], labels) -> str:
    """sha256 over the settings (weights hash, backbone, preprocessing, size, pooling, dtype) and the
    ordered image list with each file's content fingerprint and label."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path, fingerprint, label in zip(relpaths, fingerprints, labels):
        digest.update(f"\n{path}\t{fingerprint}\t{int(label)}".encode())
    return digest.hexdigest()
