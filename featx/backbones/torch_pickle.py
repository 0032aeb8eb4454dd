"""Read a PyTorch state dict (.pth) into numpy arrays without importing torch.

Why: the pretrained weights featx uses are published as PyTorch checkpoints, and
torch is a large dependency we do not want just to read a dict of arrays. Both
layouts `torch.save` writes are supported:

* legacy (torch < 1.6, `_use_new_zipfile_serialization=False`): a stream of pickles --
  magic number, protocol version, sys info, the main object (tensors refer to storages
  through `persistent_id`), the list of storage keys -- then, per storage, an 8-byte
  little-endian element count followed by the raw bytes;
* zip (torch >= 1.6): `<prefix>/data.pkl` plus one raw file `<prefix>/data/<key>` per storage.

Every pickle in the file is read by a restricted unpickler, so a file holding anything but a
plain state dict is refused rather than executed: the main object may name only an allow-list
(OrderedDict, tensor rebuild helpers and storage types); the legacy header pickles (magic number,
protocol, sys info) and the storage-key list may name no global at all -- plain ints, strings,
lists and dicts only. `pickle.load` is never called.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from featx.errors import FeatxError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch.<Name>Storage -> numpy dtype (endianness applied later).
_STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _StorageType:
    """Stands in for a torch.*Storage class: only its element dtype matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
    """A tensor whose storage bytes are not read yet (legacy files store them after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


def _not_a_state_dict(path, what) -> FeatxError:
    return FeatxError(
        f"{path}: not a plain PyTorch state dict ({what}); re-save it with "
        "torch.save(model.state_dict(), path) or pass another weights file"
    )


class _Unpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and records storage references."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, tuple[_StorageType, int]] = {}  # key -> (type, numel)
        self.views: list = []

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            raise FeatxError(
                f"{self.path}: tensors stored as torch.{name} are not supported; re-save the weights as float32"
            )
        raise _not_a_state_dict(self.path, f"it references {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise _not_a_state_dict(self.path, f"unknown persistent id {pid!r:.80}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        self.storages[key] = (stype, numel)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy storage views: (view_key, offset, size)
            return ("view", key, int(view[1]), int(view[2]))
        return ("storage", key)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler for plain data (ints, strings, bytes, lists, tuples, dicts): any global or persistent id is refused,
    so nothing can be imported, called or constructed."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        raise _not_a_state_dict(self.path, f"a header pickle references {module}.{name}")

    def persistent_load(self, pid):
        raise _not_a_state_dict(self.path, f"a header pickle holds persistent id {pid!r:.80}")


def _load_plain(f, path):
    """One plain-data pickle from the open file `f` (see _PlainUnpickler)."""
    return _PlainUnpickler(f, path).load()


def _materialize(obj, buffers: dict, path):
    """Turn every _TensorRef in the state dict into a contiguous numpy array (a copy)."""
    out = collections.OrderedDict()
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef):
            raise _not_a_state_dict(path, f"entry {name!r} is {type(ref).__name__}, not a tensor")
        base_offset = 0
        if ref.storage[0] == "view":
            _, key, base_offset, _ = ref.storage
        else:
            key = ref.storage[1]
        flat = buffers[key]
        start = base_offset + ref.offset
        if ref.size:
            extent = 1 + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) if all(ref.size) else 0
        else:
            extent = 1
        if start + extent > flat.size:
            raise FeatxError(
                f"{path}: tensor {name!r} runs past the end of its storage; the file is "
                "truncated or corrupt -- download it again"
            )
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[start:], shape=ref.size, strides=[s * item for s in ref.stride], writeable=False
        )
        out[name] = np.array(view, dtype=flat.dtype.newbyteorder("="), order="C", copy=True)
    return out


def _check_dict(obj, path):
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # common training-checkpoint wrapper
    if not isinstance(obj, dict):
        raise _not_a_state_dict(path, f"top-level object is {type(obj).__name__}")
    return obj


def _read_legacy(f, path) -> dict[str, np.ndarray]:
    try:
        magic = _load_plain(f, path)
    except FeatxError:
        raise
    except Exception as exc:
        raise FeatxError(
            f"{path}: not a PyTorch weights file ({type(exc).__name__}); pass a .pth file written by torch.save"
        ) from None
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise FeatxError(f"{path}: not a PyTorch weights file (bad magic number); pass a .pth written by torch.save")
    try:
        protocol = _load_plain(f, path)
        sys_info = _load_plain(f, path)
    except FeatxError:
        raise
    except Exception as exc:
        raise FeatxError(f"{path}: truncated PyTorch header ({exc}); download the file again") from None
    if type(protocol) is not int or protocol != _LEGACY_PROTOCOL:
        raise FeatxError(
            f"{path}: unsupported legacy PyTorch protocol {protocol!r:.80}; re-save it with a recent torch"
        )
    if not isinstance(sys_info, dict):
        raise _not_a_state_dict(path, f"its sys info is {type(sys_info).__name__}, not a dict")
    byteorder = "<" if sys_info.get("little_endian", True) else ">"

    unpickler = _Unpickler(f, path)
    obj, keys = _unpickle(path, lambda: (unpickler.load(), _load_plain(f, path)))
    obj = _check_dict(obj, path)
    if not isinstance(keys, list):
        raise _not_a_state_dict(path, f"its storage key list is {type(keys).__name__}")

    buffers = {}
    for key in keys:
        key = str(key)
        if key not in unpickler.storages:
            raise FeatxError(
                f"{path}: storage {key!r} is listed but never used; the file is corrupt -- download it again"
            )
        stype, _ = unpickler.storages[key]
        dtype = stype.dtype.newbyteorder(byteorder)
        header = f.read(8)
        if len(header) != 8:
            raise FeatxError(f"{path}: file ends before storage {key!r}; it is truncated -- download it again")
        (numel,) = struct.unpack("<q", header)
        raw = f.read(numel * dtype.itemsize) if numel >= 0 else b""
        if numel < 0 or len(raw) != numel * dtype.itemsize:
            raise FeatxError(f"{path}: storage {key!r} is truncated; download the file again")
        buffers[key] = np.frombuffer(raw, dtype=dtype)
    missing = set(unpickler.storages) - set(buffers)
    if missing:
        raise FeatxError(f"{path}: {len(missing)} storages have no data; the file is truncated -- download it again")
    return _materialize(obj, buffers, path)


def _unpickle(path, load):
    """Run `load()`; any failure other than our own refusal means a corrupt file."""
    try:
        return load()
    except FeatxError:
        raise
    except Exception as exc:
        raise FeatxError(
            f"{path}: corrupt PyTorch pickle ({type(exc).__name__}: {exc}); download the file again"
        ) from None


def _read_zip(path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise FeatxError(
                f"{path}: zip file without data.pkl, not a PyTorch checkpoint; pass a .pth written by torch.save"
            )
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() == b"big":
            byteorder = ">"
        unpickler = _Unpickler(io.BytesIO(zf.read(pkl[0])), path)
        obj = _check_dict(_unpickle(path, unpickler.load), path)
        buffers = {}
        for key, (stype, _) in unpickler.storages.items():
            try:
                raw = zf.read(f"{prefix}data/{key}")
            except KeyError:
                raise FeatxError(f"{path}: storage {key!r} missing from the archive; download the file again") from None
            dtype = stype.dtype.newbyteorder(byteorder)
            buffers[key] = np.frombuffer(raw[: len(raw) // dtype.itemsize * dtype.itemsize], dtype=dtype)
    return _materialize(obj, buffers, path)


def read_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Return {parameter name: numpy array} from a PyTorch state dict file, without torch.

    Arrays are contiguous copies in native byte order with the torch layout unchanged
    (e.g. conv weights are (out, in, kh, kw)).
    """
    path = Path(path)
    if not path.is_file():
        raise FeatxError(f"{path}: weights file not found; check the path")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as f:
        return _read_legacy(f, path)
