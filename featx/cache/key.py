"""The cache key: a hash of everything that changes the numbers, so a cache is never served stale."""

from __future__ import annotations

import hashlib
import json


def cache_key(settings: dict, relpaths: list[str], fingerprints: list[str], labels) -> str:
    """sha256 over the settings (weights hash, backbone, preprocessing, size, pooling, dtype) and the
    ordered image list with each file's content fingerprint and label."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path, fingerprint, label in zip(relpaths, fingerprints, labels):
        digest.update(f"\n{path}\t{fingerprint}\t{int(label)}".encode())
    return digest.hexdigest()
