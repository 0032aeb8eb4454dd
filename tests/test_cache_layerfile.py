"""featx.cache.layerfile, the one writer and reader of layer files: rows stored contiguously after a record in the HDF5
user block; the record and the HDF5 metadata checked against their digest before libhdf5 parses a byte; libhdf5
given only checked bytes (never the rows, which featx reads itself); crafted layouts (a group, HDF5 links, virtual
or external storage, chunks, filters, other objects) refused in one line even when their digest was recomputed.
No TensorFlow: entries are written by the store (tests/tiny_entry.py). The byte-flip fuzz is tests/test_fuzz.py."""

from __future__ import annotations

import json
import os
import re

import h5py
import numpy as np
import pytest

import featx
from featx.errors import RunFailed
from tests.tiny_entry import LAYER, WIDTH, N, make_entry

from helpers import cli, reseal_layer, unwrapped


@pytest.fixture
def entry(tmp_path):
    return make_entry(tmp_path / "cache", views=())


def test_a_layer_file_is_a_record_then_metadata_around_contiguous_rows(entry):
    from featx.cache.layerfile import MAGIC, USER_BLOCK

    path = entry.layer_file(LAYER)
    image = path.read_bytes()
    assert image.startswith(MAGIC)
    record = json.loads(image[len(MAGIC) : USER_BLOCK].rstrip(b"\0"))
    assert set(record) == {"digest", "format_version", "rows", "size"} and record["format_version"] == 4
    (offset, length), size = record["rows"], record["size"]
    assert size == len(image) and length == N * WIDTH * 4
    with h5py.File(path, "r") as f:  # any HDF5 reader sees an ordinary file
        ds = f["features"]
        assert ds.chunks is None and ds.compression is None and ds.id.get_offset() == offset
        rows = ds[()]
    assert np.array_equal(np.frombuffer(image[offset : offset + length], np.float32).reshape(N, WIDTH), rows)
    with entry.open_layer(LAYER) as data:
        assert data.shape == (N, WIDTH) and data.dtype == np.float32 and data.attrs["layer"] == LAYER
        assert np.array_equal(data[()], rows) and np.array_equal(data[2:5], rows[2:5]) and data[5:2].shape == (0, WIDTH)
        assert data.chunks == (N, WIDTH)  # a small layer is read whole


def test_libhdf5_is_given_only_checked_bytes_and_never_the_rows(entry, monkeypatch):
    from featx.cache import layerfile

    seen = []
    readinto = layerfile._Image.readinto

    def spy(self, buffer):
        start = self.tell()
        done = readinto(self, buffer)
        seen.append((start, start + done, self._rows, self._end))
        return done

    monkeypatch.setattr(layerfile._Image, "readinto", spy)
    monkeypatch.setattr(layerfile, "_PARSED", {})  # nothing parsed yet in this process
    X, _ = entry.read([LAYER])
    assert X.shape == (N, WIDTH) and seen
    parsed = len(seen)
    assert np.array_equal(entry.read([LAYER])[0], X) and len(seen) == parsed  # the same checked bytes: not parsed again
    assert all(stop <= rows or start >= end for start, stop, rows, end in seen), seen  # no read touches the rows


@pytest.fixture
def outside(tmp_path, entry):
    """An HDF5 file outside the cache holding a copy of the layer's dataset and attributes (what a crafted file
    would point at), and the genuine attributes."""
    with h5py.File(entry.layer_file(LAYER), "r") as f:
        attrs, rows = dict(f["features"].attrs), f["features"][()]
    path = tmp_path / "outside.h5"
    with h5py.File(path, "w") as f:
        f["features"] = rows + 1000.0  # rows a reader must never be served
        f["features"].attrs.update(attrs)
    return path, attrs, rows


def _group(f, outside, attrs, rows):
    f.create_group("features").attrs.update(attrs)


def _external_link(f, outside, attrs, rows):
    f["features"] = h5py.ExternalLink(str(outside), "features")


def _soft_link(f, outside, attrs, rows):
    f["rows"] = rows
    f["rows"].attrs.update(attrs)
    f["features"] = h5py.SoftLink("/rows")


def _virtual(f, outside, attrs, rows):
    layout = h5py.VirtualLayout(shape=rows.shape, dtype=rows.dtype)
    layout[:] = h5py.VirtualSource(str(outside), "features", shape=rows.shape)
    f.create_virtual_dataset("features", layout).attrs.update(attrs)


def _external_storage(f, outside, attrs, rows):
    raw = outside.with_suffix(".raw")
    raw.write_bytes((rows + 1000.0).astype(np.float32).tobytes())
    f.create_dataset("features", shape=rows.shape, dtype=rows.dtype, external=[(str(raw), 0, rows.nbytes)])
    f["features"].attrs.update(attrs)


def _chunked(f, outside, attrs, rows):
    f.create_dataset("features", data=rows, chunks=(2, rows.shape[1]), compression="gzip").attrs.update(attrs)


def _another_object(f, outside, attrs, rows):
    f["features"] = rows
    f["features"].attrs.update(attrs)
    f["extra"] = np.zeros(3)


CRAFTED = {
    "group": (_group, r"it holds a group 'features', not the dataset featx writes"),
    "external link": (_external_link, r"'features' is a ExternalLink to elsewhere; featx follows no HDF5 links"),
    "soft link": (_soft_link, r"it holds \['features', 'rows'\], not the one dataset"),
    "virtual": (_virtual, r"its rows are virtual, external, chunked or filtered"),
    "external storage": (_external_storage, r"its rows are virtual, external, chunked or filtered"),
    "chunked": (_chunked, r"its rows are virtual, external, chunked or filtered"),
    "another object": (_another_object, r"it holds \['extra', 'features'\], not the one dataset"),
}


@pytest.mark.parametrize("craft", CRAFTED)
def test_a_crafted_layout_is_refused_in_one_line_even_with_its_digest_recomputed(craft, entry, outside):
    make, problem = CRAFTED[craft]
    path = entry.layer_file(LAYER)
    with h5py.File(path, "w", userblock_size=512) as f:
        make(f, outside[0], outside[1], outside[2])
    reseal_layer(path)
    message = rf"layer file '{re.escape(str(path))}' cannot be read \({problem}.*\); run `featx verify` and re-extract"
    with pytest.raises(RunFailed, match=message):
        featx.load(entry, [LAYER])
    cache = entry.path.parent
    for command in (["info"], ["fit", "--clf", "logreg", "--layers", LAYER], ["export", "--layers", LAYER]):
        rc, out, err = cli(*command, "--cache-dir", cache)
        assert rc == 1 and err.count("\n") == 1 and re.search(message, err) and "Traceback" not in err, (command, err)
    rc, out, err = cli("verify", "--cache-dir", cache)
    assert rc == 1 and re.search(rf"layer {re.escape(LAYER)}: file cannot be read \({problem}", unwrapped(out)), out


def test_an_older_or_foreign_layer_file_is_refused_before_it_is_parsed(entry):
    path = entry.layer_file(LAYER)
    with h5py.File(path, "r") as f:
        attrs, rows = dict(f["features"].attrs), f["features"][()]
    with h5py.File(path, "w") as f:  # as featx wrote layers before format 4: no user block, row chunks
        f.create_dataset("features", data=rows, chunks=(2, WIDTH)).attrs.update(attrs)
    with pytest.raises(
        RunFailed, match=r"its first bytes are no featx record: written by a featx before cache format 4"
    ):
        featx.load(entry, [LAYER])
    path.write_bytes(b"\0" * 2000)
    with pytest.raises(RunFailed, match=r"its first bytes are no featx record: not a featx layer file"):
        featx.load(entry, [LAYER])


def test_a_layer_file_cut_short_or_grown_is_refused(entry):
    path = entry.layer_file(LAYER)
    image = path.read_bytes()
    for changed in (image[:-1], image + b"\0", image[:600]):
        path.write_bytes(changed)
        with pytest.raises(RunFailed, match=rf"it is {len(changed)} bytes long, not the {len(image)} it was written"):
            featx.load(entry, [LAYER])
    path.write_bytes(image)
    assert featx.verify(entry.path) == []
    os.truncate(path, 0)
    with pytest.raises(RunFailed, match="no featx record"):
        featx.load(entry, [LAYER])
