"""Integrity of what the cache serves: digests catch any changed byte, an index that no longer matches its key is
refused on open, damaged files end in one line, committed rows are never padded, crash debris is removed.

Real HDF5 files edited the way a user or a failing disk would, real `featx` processes (tests/forkserver.py) for
the read-only cache.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_capture import cli
import forkserver
import imagegen
import featx
from featx.cache.manifest import FORMAT_VERSION
from featx.cache.passlog import PassLog
from featx.errors import FeatxError, RunFailed
from featx.extractor import _advice

ARGS = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "96", "--batch-size", "4", "--quiet"]
LAYERS = "block_1_project_BN,block_3_project_BN"


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines()
             if line.strip() and not re.match(r"[IWEF]\d{4} |WARNING: All log messages before absl", line)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity_data")
    for path, class_name, _ in imagegen.elpv_images(10, n_classes=2):
        (root / class_name).mkdir(exist_ok=True)
        shutil.copyfile(path, root / class_name / os.path.basename(path))
    return root


@pytest.fixture(scope="module")
def base(data, tmp_path_factory) -> Path:
    cache_dir = tmp_path_factory.mktemp("integrity_base")
    rc, _, err = cli("extract", "--data", data, *ARGS, "--layers", LAYERS, "--cache-dir", cache_dir)
    assert rc == 0, err
    return cache_dir


@pytest.fixture
def cache(base, tmp_path) -> featx.Cache:
    shutil.copytree(base, tmp_path / "cache")
    return featx.Cache(tmp_path / "cache")


def test_cache_object_finds_entries_by_name_key_and_recency(cache):
    [entry] = cache.entries()
    assert cache.open().path == entry.path and entry.cache.root == cache.root
    assert cache.open(entry.key[:6]).path == entry.path == cache.open(entry.key).path == cache.open("mobilenet").path
    assert cache.runs_dir == cache.root / "runs" and cache.reports_dir == cache.root / "reports"
    assert featx.open_entry(cache_dir=cache.root).key == entry.key  # the old module functions still work
    with pytest.raises(FeatxError, match=r"cache 'resnet' matches no cache entry; choose one of: mobilenet_v2-"):
        cache.open("resnet")
    assert entry.manifest.format_version == FORMAT_VERSION == 3 and set(entry.manifest.digests) == {
        "paths", "labels", "fingerprints", "split", "valid", "errors"}


def test_finite_garbage_in_a_layer_is_named_by_verify(cache):
    entry = cache.open()
    with h5py.File(entry.layer_file("block_3_project_BN"), "r+") as f:
        f["features"][4, :3] += 0.25  # finite, plausible, wrong
    problems = featx.verify(entry.path)
    assert problems == [(f"{entry.name}: layer block_3_project_BN: data in layers/block_3_project_BN.h5 changed since "
                         "it was published (digest mismatch)")]
    rc, out, err = cli("verify", "--cache-dir", cache.root)
    assert rc == 1 and "digest mismatch" in out and one_line(err)


@pytest.mark.parametrize("array", ["labels", "split", "valid"])
def test_hand_edited_index_is_refused_on_open(array, cache):
    """Labels are in the key; split and valid are not, but their digests are: either way nothing trains on them."""
    entry = cache.open()
    edits = {"labels": lambda v: 1 - v, "split": lambda v: b"test" if v != b"test" else b"train", "valid": lambda v: not v}
    with h5py.File(entry.path / "index.h5", "r+") as f:
        values = f[array][()]
        values[0] = edits[array](values[0])
        f[array][...] = values
    with pytest.raises(RunFailed, match=r"index.h5' was modified or damaged since it was written \(.*\); run `featx "
                                        r"verify` and re-extract"):
        featx.load(cache_dir=cache.root)
    rc, _, err = cli("info", "--cache-dir", cache.root)
    assert rc == 1 and "was modified or damaged" in one_line(err)
    problems = featx.verify(entry.path)
    assert problems and ("settings hash mismatch" in problems[0] or f"index array(s) {array} changed" in problems[0])


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))


@pytest.mark.parametrize("damage", [_truncate, _zero, _garbage], ids=["truncated", "zeroed", "garbage"])
def test_damaged_layer_file_is_one_line_in_info_load_and_fit(damage, cache):
    entry = cache.open()
    damage(entry.layer_file("block_3_project_BN"))
    pattern = rf"layer file '{re.escape(str(entry.layer_file('block_3_project_BN')))}' cannot be read .*; run `featx verify`"
    with pytest.raises(RunFailed, match=pattern):
        featx.load(cache_dir=cache.root)
    for command in (["info"], ["fit", "--layers", "block_3_project_BN", "--clf", "knn"]):
        rc, _, err = cli(*command, "--cache-dir", cache.root)
        assert rc == 1 and re.search(pattern, one_line(err)), err
    X, _, _ = featx.load(cache_dir=cache.root, layers="block_1_project_BN")  # the other layer still serves
    assert X.shape[1] == 24


def test_ls_marks_a_corrupt_index_and_lists_the_others(cache):
    entry = cache.open()
    broken = cache.root / "mobilenet_v2-0123456789ab"
    shutil.copytree(entry.path, broken)
    (broken / "index.h5").write_bytes(b"not hdf5 at all")
    rc, out, err = cli("ls", "--cache-dir", cache.root)
    assert rc == 0, err
    [good] = [line for line in out.splitlines() if line.startswith(entry.name)]
    [bad] = [line for line in out.splitlines() if line.startswith(broken.name)]
    assert "mobilenet_v2" in good.split()[1] and "UNREADABLE" in bad and "featx verify" in bad
    assert [e.name for e in cache.entries()] == [entry.name]


def test_unknown_format_version_is_one_line(cache, data):
    entry = cache.open()
    with h5py.File(entry.path / "index.h5", "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(FeatxError, match=r"index.h5 has format version 99, this featx reads version 3; delete that "
                                         r"cache entry and re-run `featx extract`"):
        featx.load(cache_dir=cache.root)
    with h5py.File(entry.path / "index.h5", "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION
    (entry.path / "work").mkdir()
    (entry.path / "work" / "progress.json").write_text(json.dumps({"format_version": 7, "layers": []}))
    assert re.search(r"progress.json has format version 7", featx.verify(entry.path)[0])
    rc, _, err = cli("extract", "--data", data, *ARGS, "--layers", LAYERS, "--cache-dir", cache.root)
    assert rc == 2 and "progress.json has format version 7" in one_line(err)


def test_raw_rows_short_of_the_committed_count_are_never_padded(cache, data, tmp_path):
    """A damaged pass is restarted; opening its raw files for append is an error, not a zero fill."""
    entry = cache.open()
    n, info = len(entry.labels), {"block_2_add": entry.layer_info["block_2_add"]}
    log = PassLog.start(entry, info, n, 4, "float32")
    log.open_for_append()
    for _ in range(2):
        log.append({"block_2_add": np.ones((4, 24), np.float32)}, {})
    log.close()
    with pytest.raises(RunFailed, match=r"an interrupted extraction pass .* must finish before another starts"):
        PassLog.start(entry, info, n, 4, "float32")
    raw = entry.path / "work" / "block_2_add.raw"
    os.truncate(raw, 4 * 24 * 4)  # 4 of 8 committed rows left
    with pytest.raises(RunFailed, match=r"raw rows of layer block_2_add hold 4 of 8 committed rows"):
        log.open_for_append()
    assert raw.stat().st_size == 4 * 24 * 4  # not extended
    assert PassLog.pending(entry) is None  # the next run restarts the pass
    rc, out, err = cli("extract", "--data", data, *ARGS, "--layers", "block_2_add", "--cache-dir", cache.root)
    assert rc == 0 and "resuming" not in out, err
    fresh = tmp_path / "fresh"
    assert cli("extract", "--data", data, *ARGS, "--layers", "block_2_add", "--cache-dir", fresh)[0] == 0
    X = featx.load(cache_dir=cache.root, layers="block_2_add")[0]
    assert np.array_equal(X, featx.load(cache_dir=fresh, layers="block_2_add")[0]) and np.abs(X).sum(axis=1).all()
    assert featx.verify(cache.open().path) == []


def test_unreadable_pass_record_restarts_the_pass(cache, data):
    entry = cache.open()
    (entry.path / "work").mkdir()
    (entry.path / "work" / "progress.json").write_text('{"format_version": 2, "layers": [')
    assert "progress.json' is unreadable" in featx.verify(entry.path)[0]
    rc, out, err = cli("ls", "--cache-dir", cache.root)
    assert rc == 0 and "unreadable" in out.splitlines()[1], out + err
    rc, out, err = cli("extract", "--data", data, *ARGS, "--layers", "block_2_add", "--cache-dir", cache.root)
    assert rc == 0 and "cached 1 layer(s)" in out, err
    assert featx.verify(entry.path) == [] and PassLog.summary(cache.open()) is None


def test_staging_debris_of_dead_processes_on_this_host_is_removed(cache, data):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, host = int(dead.stdout), socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        debris = {name: cache.root / name for name in (
            f".new-aaaaaaaaaaaa-{dead_pid}@{host}", f".new-bbbbbbbbbbbb-{live.pid}@{host}",
            f".new-cccccccccccc-{dead_pid}@another-host")}
        for folder in debris.values():
            (folder / "layers").mkdir(parents=True)
        rc, out, err = cli("extract", "--data", data, *ARGS, "--layers", LAYERS, "--cache-dir", cache.root)
        assert rc == 0 and "nothing to do" in out, err  # also when the entry exists already
        assert [name for name, folder in debris.items() if folder.exists()] == list(debris)[1:]
        (debris[f".new-aaaaaaaaaaaa-{dead_pid}@{host}"] / "layers").mkdir(parents=True)
        rc, _, err = cli("extract", "--data", data, *ARGS, "--layers", LAYERS, "--pool", "max", "--cache-dir", cache.root)
        assert rc == 0, err
        assert [name for name, folder in debris.items() if folder.exists()] == list(debris)[1:]
        assert len(cache.entries()) == 2 and not list(cache.root.glob(f".new-*-{os.getpid()}@*"))
    finally:
        live.kill()
        live.wait()


def test_no_op_extract_on_a_read_only_cache_says_nothing_to_do(cache, data):
    paths = [cache.root, *cache.root.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        args = ["extract", "--data", data, *ARGS, "--layers", "block_1_project_BN", "--cache-dir", cache.root]
        noop = forkserver.server().run(args, unprivileged=True)
        assert noop.rc == 0 and "nothing to do: 1 layer(s) already cached" in noop.out, noop.err
        work = forkserver.server().run([*args[:-4], "--layers", "block_2_add", *args[-2:]], unprivileged=True)
        assert work.rc == 2 and "cannot lock cache entry" in one_line(work.err)
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("code, advice", [(errno.ENOSPC, "free disk space"), (errno.EFBIG, "free disk space"),
                                          (errno.EROFS, "fix the permissions"), (errno.ENOENT, "run `featx verify`")])
def test_write_failure_advice_fits_the_error(code, advice):
    assert _advice(OSError(code, os.strerror(code))).startswith(advice)
