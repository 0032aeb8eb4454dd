"""The entry manifest: everything `index.h5` states about an entry besides its per-image arrays.

`EntryManifest.to_attrs()` / `from_attrs()` are the only encoder and decoder of the index's HDF5
attributes: nested values travel as JSON strings, and every attribute set carries `format_version`.
The bytes of `index.h5` as a whole, attributes included, carry a digest that is checked before they are
parsed (featx.cache.store, the file's writer).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from featx.errors import FeatxError

FORMAT_VERSION = 4  # 2: digests of layer data and index arrays, versioned progress.json with ordered layers;
# 3: index.h5 holds the digest of its bytes (checked before it is parsed); layer digests bound to layer, view, key;
# 4: layer files hold their rows contiguously and the digest of their HDF5 metadata in their user block (checked
# before libhdf5 parses them, featx.cache.layerfile)
_JSON = ("settings", "layer_info", "class_names", "backbone_args", "split_settings", "digests")
_TYPES = {
    "key": str,
    "settings": dict,
    "layer_info": dict,
    "class_names": list,
    "backbone_args": dict,
    "description": str,
    "root": str,
    "split_settings": dict,
    "digests": dict,
}


def check_version(found, where) -> None:
    """Every file featx writes in the cache carries FORMAT_VERSION; anything else is refused in one line."""
    try:
        number = None if found is None else int(found)
    except (TypeError, ValueError, OverflowError):
        number = -1
    if number != FORMAT_VERSION:
        version = (
            "no format version"
            if found is None
            else f"format version {number}"
            if number != -1
            else "an unreadable format version"
        )
        raise FeatxError(
            f"{where} has {version}, this featx reads version {FORMAT_VERSION}; delete that cache entry "
            "and re-run `featx extract` (or use the featx version that wrote it)"
        )


class Digest:
    """blake2b-128 over byte buffers fed in order (a layer's rows block by block, or one index array)."""

    def __init__(self):
        self._hash = hashlib.blake2b(digest_size=16)

    def update(self, chunk) -> None:
        self._hash.update(memoryview(np.ascontiguousarray(chunk)).cast("B"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def digest_bytes(chunks) -> str:
    digest = Digest()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def digest_array(values) -> str:
    """Digest of one index array: strings by their UTF-8 text (NUL-separated), numbers by dtype and bytes."""
    values = np.asarray(values)
    if values.dtype.kind in "UO":
        return digest_bytes([np.frombuffer("\0".join(map(str, values)).encode(), np.uint8)])
    return digest_bytes([np.frombuffer(values.dtype.str.encode(), np.uint8), values])


@dataclass
class EntryManifest:
    """key : the cache key (featx.cache.key.cache_key of settings and the image list).
    settings : what changes the numbers (backbone, weights id, preprocessing, size, pool, dtype).
    layer_info : {layer: {kind, output_shape, n_features, block}} for every poolable layer, in depth order.
    digests : {index array name: digest_array(...)}, set when the index is written.
    """

    key: str
    settings: dict
    layer_info: dict
    class_names: list
    backbone_args: dict
    description: str = ""
    root: str = ""
    split_settings: dict = field(default_factory=dict)
    created: float = 0.0
    digests: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_attrs(self) -> dict:
        return {k: json.dumps(v) if k in _JSON else v for k, v in asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs, where) -> EntryManifest:
        """attrs : the index's HDF5 attributes (bytes or str); where : the file, for error messages."""
        try:
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        except ValueError as exc:
            raise FeatxError(f"{where} has unreadable attributes ({exc}); run `featx verify`") from None
        check_version(attrs.get("format_version"), where)
        known = {f.name for f in fields(cls)}
        try:
            values = {k: json.loads(v) if k in _JSON else v for k, v in attrs.items() if k in known}
            values["format_version"] = int(values["format_version"])
            values["created"] = float(values.get("created", 0.0))
            wrong = [k for k, t in _TYPES.items() if k in values and not isinstance(values[k], t)]
            if wrong:
                raise ValueError(f"attribute(s) {', '.join(wrong)} of the wrong type")
            return cls(**values)
        except (TypeError, ValueError, OverflowError) as exc:
            raise FeatxError(f"{where} has unreadable attributes ({exc}); run `featx verify`") from None
