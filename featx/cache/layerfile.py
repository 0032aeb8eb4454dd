"""Layer files (`layers/<layer>.h5`, `views/<view>/<layer>.h5`): their one writer and their one reader.

A layer file is an HDF5 file, written by h5py, holding one dataset `features` (n_images, n_features) stored
contiguously and uncompressed, with the layer's attributes. It starts with a 512-byte HDF5 user block, which
libhdf5 ignores and in which featx, once h5py has closed the file, writes a record:

    featx layer\\n{"digest":"<blake2b-128>","format_version":4,"rows":[<offset>,<length>],"size":<file size>}

`rows` is where the dataset's values lie in the file; `digest` covers the record's numbers and every byte of the
file outside the user block and those values: the HDF5 metadata (superblock, object headers, attributes, heaps),
a few KB before and after the rows.

Opening (`open_layer_file`) reads the user block, the metadata before the rows and the metadata after them, and
checks them before any byte reaches libhdf5: the record must be exactly what featx writes, the file exactly
`size` bytes long, the digest must match. libhdf5 then parses an image of the file in memory that holds those
checked bytes and nothing else (the rows read as zeros, and libhdf5 never reads them), so every byte libhdf5
ever sees was checked first: a file changed in any byte outside the rows, by damage or by hand, is refused in
one line and cannot crash or hang libhdf5. What the parse says is then checked against this layout (one
contiguous dataset `features` where the record says, no group in its place, no external or virtual storage,
no filters, no other object); the rows are read by featx itself (`LayerData`: pread at their offset), never by
libhdf5. A change inside the rows is data: `featx verify` finds it by the rows' digest (an attribute, inside
the checked metadata), and `load` serves it, as it serves every row, without hashing.

The digest is no signature: whoever rewrites a file together with its digest is not stopped by it. Such a file
still reaches libhdf5 only with a layout of the expected size, and its rows are still read by featx.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import h5py
import numpy as np

from featx.cache import safepath
from featx.cache.manifest import FORMAT_VERSION, check_version
from featx.errors import RunFailed

MAGIC, USER_BLOCK = b"featx layer\n", 512
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
METADATA_LIMIT = 1 << 20  # bytes of HDF5 metadata before or after the rows (featx writes a few KB)
HDF5_OVERHEAD = 1 << 20  # headers of one layer file, generously (disk space claimed before writing)
CHUNK_BYTES = 1 << 20  # the unit of row reads that stream (CachedMaps): ~1 MiB of rows
DTYPES = (np.dtype("<f4"), np.dtype("<f2"))  # what featx stores (settings' dtype float32 or float16)
DATASET = "features"


class LayerFileError(RunFailed):
    """A layer file that is not one featx wrote as it is: `problem` says what (the message adds the file and fix)."""

    def __init__(self, path, problem: str):
        self.problem = problem
        super().__init__(f"layer file '{path}' cannot be read ({problem}); run `featx verify` and re-extract")


# ----------------------------------------------------------------------------------------------- writing
@contextmanager
def write_layer_file(path: Path, n_rows: int, n_features: int, dtype):
    """Yield a LayerWriter for a new layer file at `path` (a temporary name: the caller publishes it by rename).
    Write the rows with `write(start, block)`, then `finish(attrs)`; a write error (disk full, file size limit)
    is a plain OSError."""
    with _write_errors(path):
        _reserve(path, n_rows * n_features * np.dtype(dtype).itemsize + HDF5_OVERHEAD)
        writer = LayerWriter(path, n_rows, n_features, dtype)
        try:
            yield writer
        finally:
            writer.close()


class LayerWriter:
    def __init__(self, path: Path, n_rows: int, n_features: int, dtype):
        self.path, dtype = Path(path), np.dtype(dtype)
        self._bytes = n_rows * n_features * dtype.itemsize
        self._file = h5py.File(self.path, "w", userblock_size=USER_BLOCK)
        self._ds = self._file.create_dataset(DATASET, shape=(n_rows, n_features), dtype=dtype)  # contiguous

    def write(self, start: int, block: np.ndarray) -> None:
        self._ds[start : start + len(block)] = block

    def finish(self, attrs: dict) -> None:
        """Store the attributes, close the file and write the record of its layout and digest."""
        self._ds.attrs.update(attrs)
        offset, length = self._ds.id.get_offset(), self._ds.id.get_storage_size()
        self._file.close()
        if offset is None or length != self._bytes:
            raise OSError(errno.EIO, "the rows were not stored contiguously", str(self.path))
        fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            head, tail = (
                _pread(fd, offset - USER_BLOCK, USER_BLOCK),
                _pread(fd, size - offset - length, offset + length),
            )
            os.pwrite(fd, _record(offset, length, size, _digest(offset, length, size, head, tail)), 0)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _record(offset: int, length: int, size: int, digest: str) -> bytes:
    """The user block of a layer file: MAGIC, then the record as compact JSON, padded with NUL bytes."""
    record = {"digest": digest, "format_version": FORMAT_VERSION, "rows": [offset, length], "size": size}
    return (MAGIC + json.dumps(record, separators=(",", ":"), sort_keys=True).encode()).ljust(USER_BLOCK, b"\0")


def _digest(offset: int, length: int, size: int, head: bytes, tail: bytes) -> str:
    """blake2b-128 of the record's numbers and the metadata before and after the rows."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(["layer file", FORMAT_VERSION, offset, length, size]).encode())
    digest.update(head)
    digest.update(tail)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- reading
class LayerData:
    """An open, checked layer file: its `shape`, `dtype` and `attrs` (a read-only mapping of the dataset's
    attributes, as libhdf5 parsed them from the checked metadata in memory), and its rows, read by featx at their
    offset: `data[()]` every row, `data[a:b]` rows a..b-1."""

    def __init__(self, fd: int, path: Path, shape: tuple, dtype: np.dtype, attrs, offset: int):
        self.path, self.shape, self.dtype, self.attrs = path, shape, dtype, attrs
        self._fd, self._offset = fd, offset

    @property
    def chunks(self) -> tuple[int, int]:
        """(rows, features) of one streaming read: about CHUNK_BYTES of rows (h5py's name, for readers that
        read in chunks)."""
        width = self.shape[1]
        return max(1, min(self.shape[0], CHUNK_BYTES // max(1, width * self.dtype.itemsize))), width

    def __getitem__(self, key) -> np.ndarray:
        if key == () or key is Ellipsis:
            return self.rows(0, self.shape[0])
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self.rows(start, max(start, stop))
        raise TypeError(f"layer rows are read by () or a slice of rows, not {key!r}")

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 as an array (stop - start, n_features)."""
        out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.dtype)
        if not out.size:
            return out
        view, at = memoryview(out).cast("B"), self._offset + start * self.shape[1] * self.dtype.itemsize
        while view:
            done = os.preadv(self._fd, [view[: 1 << 30]], at)
            if done <= 0:
                raise LayerFileError(self.path, "it ends before its rows do: truncated")
            view, at = view[done:], at + done
        return out


@contextmanager
def open_layer_file(path: Path, root: Path):
    """Yield the LayerData of the layer file at `path` (below the cache folder `root`: a link on the way must stay
    inside it), checked before libhdf5 reads any of its bytes (see the module's notes).

    Raises LayerFileError (one line) for a file that is not one featx wrote as it is, FeatxError for a record of
    another format version, safepath.LinkRefused for a link leading out of `root` or to nothing."""
    path = Path(path)
    safepath.check_read(root, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LayerFileError(path, exc.strerror or str(exc)) from None
    try:
        image, offset, length, digest = _checked(fd, path)
        parsed = _PARSED.get(digest)
        if parsed is None:
            parsed = _parsed(image, path, offset, length)
            while len(_PARSED) >= PARSED_LIMIT:
                _PARSED.pop(next(iter(_PARSED)))
            _PARSED[digest] = parsed
        yield LayerData(fd, path, *parsed, offset)
    finally:
        os.close(fd)


# What libhdf5 parsed from checked metadata, by their digest (which covers every byte it read): the same bytes
# parse the same, so a layer file opened again in this process is not parsed again.
_PARSED: dict[str, tuple] = {}
PARSED_LIMIT = 4096


def _parsed(image: _Image, path: Path, offset: int, length: int) -> tuple[tuple, np.dtype, MappingProxyType]:
    """(shape, dtype, attributes) of the checked image's one dataset, laid out as featx writes it."""
    try:
        with h5py.File(image, "r") as f:
            ds = _layout(f, path, offset, length)
            return tuple(int(n) for n in ds.shape), ds.dtype, MappingProxyType(dict(ds.attrs.items()))
    except LayerFileError:
        raise
    except Exception as exc:  # noqa: BLE001  checked bytes that still do not parse (a rewritten digest)
        raise LayerFileError(path, _first_line(exc)) from None


def _checked(fd: int, path: Path) -> tuple[_Image, int, int, str]:
    """The image of the file libhdf5 may parse, the rows' offset and length, and the digest of the record's numbers
    and the metadata; LayerFileError if any byte of the record or of the HDF5 metadata is not what featx wrote."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise LayerFileError(path, "it is not a plain file")
    block = _pread(fd, USER_BLOCK, 0)
    if not block.startswith(MAGIC):
        raise LayerFileError(
            path,
            "its first bytes are no featx record: "
            + (
                "written by a featx before cache format 4, or not by featx"
                if block.startswith(HDF5_SIGNATURE)
                else "not a featx layer file"
            ),
        )
    record = _parse_record(block, path)
    offset, length, size = record["rows"][0], record["rows"][1], record["size"]
    if size != info.st_size:
        raise LayerFileError(path, f"it is {info.st_size} bytes long, not the {size} it was written with")
    head, tail = _pread(fd, offset - USER_BLOCK, USER_BLOCK), _pread(fd, size - offset - length, offset + length)
    if _digest(offset, length, size, head, tail) != record["digest"]:
        raise LayerFileError(path, "its HDF5 metadata changed since it was written: digest mismatch; not parsed")
    return _Image(block + head, tail, offset, length, size), offset, length, record["digest"]


def _parse_record(block: bytes, path: Path) -> dict:
    """The record of a user block, refused unless it is byte for byte the one featx writes for its numbers."""
    try:
        record = json.loads(block[len(MAGIC) :].rstrip(b"\0"))
    except ValueError:
        record = None
    if isinstance(record, dict) and "format_version" in record:
        check_version(record["format_version"], path)
    try:
        offset, length = (int(v) for v in record["rows"])
        size, digest = int(record["size"]), str(record["digest"])
        canonical = _record(offset, length, size, digest) == block
    except (KeyError, TypeError, ValueError, OverflowError):
        canonical = False
    if not canonical or not (
        USER_BLOCK <= offset <= USER_BLOCK + METADATA_LIMIT
        and length >= 0
        and offset + length <= size <= offset + length + METADATA_LIMIT
    ):
        raise LayerFileError(path, "its featx record changed since it was written")
    return record


def _layout(f: h5py.File, path: Path, offset: int, length: int) -> h5py.Dataset:
    """The one dataset `features`, refused unless laid out as featx writes it."""
    names = list(f)
    if names != [DATASET]:
        raise LayerFileError(path, f"it holds {names or 'nothing'}, not the one dataset '{DATASET}' featx writes")
    link = f.get(DATASET, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise LayerFileError(path, f"'{DATASET}' is a {type(link).__name__} to elsewhere; featx follows no HDF5 links")
    ds = f[DATASET]
    if not isinstance(ds, h5py.Dataset):
        raise LayerFileError(path, f"it holds a group '{DATASET}', not the dataset featx writes")
    plist = ds.id.get_create_plist()
    if ds.is_virtual or ds.external or plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters():
        raise LayerFileError(
            path, "its rows are virtual, external, chunked or filtered; featx writes them contiguously in the file"
        )
    dtype, shape = ds.dtype, tuple(int(n) for n in ds.shape)
    if dtype not in DTYPES or len(shape) != 2:
        raise LayerFileError(path, f"it holds {shape} {dtype}, not rows of float32 or float16")
    if (
        ds.id.get_offset() != offset
        or ds.id.get_storage_size() != length
        or length != shape[0] * shape[1] * dtype.itemsize
    ):
        raise LayerFileError(path, "its rows lie elsewhere than its featx record says")
    return ds


class _Image(io.RawIOBase):
    """A layer file as libhdf5 is allowed to see it: the checked bytes before and after the rows, zeros between."""

    def __init__(self, head: bytes, tail: bytes, offset: int, length: int, size: int):
        self._head, self._tail, self._rows, self._end, self._size, self._pos = (
            head,
            tail,
            offset,
            offset + length,
            size,
            0,
        )

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._pos + offset if whence == 1 else self._size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        out = memoryview(buffer).cast("B")
        stop = min(self._size, self._pos + len(out))
        at, done = self._pos, 0
        while at < stop:
            if at < self._rows:
                part = self._head[at : min(stop, self._rows)]
            elif at < self._end:
                part = bytes(min(stop, self._end) - at)
            else:
                part = self._tail[at - self._end : stop - self._end]
            out[done : done + len(part)] = part
            at, done = at + len(part), done + len(part)
        self._pos = at
        return done


def _pread(fd: int, n: int, at: int) -> bytes:
    """Exactly n bytes at offset `at` (fewer only at the end of the file)."""
    parts = []
    while n > 0:
        part = os.pread(fd, n, at)
        if not part:
            break
        parts.append(part)
        n, at = n - len(part), at + len(part)
    return b"".join(parts)


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()
    return text[0] if text and text[0] else type(exc).__name__


@contextmanager
def _write_errors(path: Path):
    """A failed HDF5 write (disk full, file size limit) as a plain OSError; h5py raises RuntimeError on close."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        found = re.search(r"errno = (\d+)", str(exc))
        code = getattr(exc, "errno", None) or (int(found.group(1)) if found else errno.EIO)
        raise OSError(code, os.strerror(code), str(path)) from exc


def _reserve(path: Path, n_bytes: int) -> None:
    """Claim the disk space a layer file needs before HDF5 writes it: HDF5 does not fail cleanly on a full
    disk (its objects are left half-closed and can crash the process later), Python's fallocate does."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.posix_fallocate(fd, 0, n_bytes)
    finally:
        os.close(fd)
