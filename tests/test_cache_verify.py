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

import featx
from featx.cache.manifest import FORMAT_VERSION
from featx.cache.passlog import PassLog
from featx.cache.store import CacheEntry
from featx.errors import FeatxError, RunFailed
from featx.extractor import _advice

import imagegen
from helpers import cli, one_line, reseal_layer

ARGS = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "96", "--batch-size", "4", "--quiet"]
LAYERS = "block_1_project_BN,block_3_project_BN"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity_data")
    for path, class_name, _ in imagegen.elpv_images(10, n_classes=2):
        (root / class_name).mkdir(exist_ok=True)
        shutil.copyfile(path, root / class_name / os.path.basename(path))
    return root


@pytest.fixture(scope="module")
def base(data, tiny_cache) -> Path:
    return tiny_cache(data, LAYERS, batch_size=4)


@pytest.fixture
def cache(base, tmp_path) -> featx.Cache:
    shutil.copytree(base, tmp_path / "cache")
    return featx.Cache(tmp_path / "cache")


def test_cache_object_finds_entries_by_name_key_and_recency(cache):
    [entry] = cache.entries()
    assert cache.open().path == entry.path and entry.cache.root == cache.root
    assert cache.open(entry.key[:6]).path == entry.path == cache.open(entry.key).path == cache.open("mobilenet").path
    assert cache.runs_dir == cache.root / "runs" and cache.reports_dir == cache.root / "reports"
    assert featx.Cache(cache.root).open(None).key == entry.key  # the old module functions still work
    with pytest.raises(FeatxError, match=r"cache 'resnet' matches no cache entry; choose one of: mobilenet_v2-"):
        cache.open("resnet")
    assert entry.manifest.format_version == FORMAT_VERSION == 4 and set(entry.manifest.digests) == {
        "paths",
        "labels",
        "fingerprints",
        "split",
        "valid",
        "errors",
    }


def test_finite_garbage_in_a_layer_is_named_by_verify(cache):
    entry = cache.open()
    with h5py.File(entry.layer_file("block_3_project_BN"), "r+") as f:
        f["features"][4, :3] += 0.25  # finite, plausible, wrong
    problems = featx.verify(entry.path)
    assert problems == [
        (
            f"{entry.name}: layer block_3_project_BN: data in layers/block_3_project_BN.h5 changed since "
            "it was published (digest mismatch)"
        )
    ]
    rc, out, err = cli("verify", "--cache-dir", cache.root)
    assert rc == 1 and "digest mismatch" in out and one_line(err)


CHANGED = "index.h5 changed since it was written (digest mismatch); it is not read further"
MODIFIED = (
    r"index.h5' was modified or damaged since it was written \(its bytes no longer match their digest\); run "
    r"`featx verify` and re-extract into a fresh --cache-dir"
)


@pytest.mark.parametrize("array", ["labels", "split", "valid"])
def test_hand_edited_index_is_refused_on_open(array, cache):
    """Labels are in the key; split and valid are not, but their digests are, and the digest of the index's bytes
    covers everything: nothing trains on them."""
    entry = cache.open()
    edits = {
        "labels": lambda v: 1 - v,
        "split": lambda v: b"test" if v != b"test" else b"train",
        "valid": lambda v: not v,
    }
    with h5py.File(entry.path / "index.h5", "r+") as f:
        values = f[array][()]
        values[0] = edits[array](values[0])
        f[array][...] = values
    with pytest.raises(RunFailed, match=MODIFIED):
        featx.load(None, cache=cache.root)
    rc, _, err = cli("info", "--cache-dir", cache.root)
    assert rc == 1 and re.search(MODIFIED, one_line(err))
    assert featx.verify(entry.path) == [f"{entry.name}: {CHANGED}"]


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
    pattern = (
        rf"layer file '{re.escape(str(entry.layer_file('block_3_project_BN')))}' cannot be read .*; run `featx verify`"
    )
    with pytest.raises(RunFailed, match=pattern):
        featx.load(None, cache=cache.root)
    for command in (["info"], ["fit", "--layers", "block_3_project_BN", "--clf", "knn"]):
        rc, _, err = cli(*command, "--cache-dir", cache.root)
        assert rc == 1 and re.search(pattern, one_line(err)), err
    X, _, _ = featx.load(None, "block_1_project_BN", cache=cache.root)  # the other layer still serves
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
    original = (entry.path / "index.h5").read_bytes()
    with h5py.File(entry.path / "index.h5", "r+") as f:
        f.attrs["format_version"] = 99
    index = bytearray((entry.path / "index.h5").read_bytes())  # as a later featx would seal it
    index[:512] = b"featx index\n" + json.dumps({"format_version": 99, "digest": "?"}).encode().ljust(500, b"\0")
    (entry.path / "index.h5").write_bytes(index)
    with pytest.raises(
        FeatxError,
        match=r"index.h5 has format version 99, this featx reads version 4; delete that "
        r"cache entry and re-run `featx extract`",
    ):
        featx.load(None, cache=cache.root)
    (entry.path / "index.h5").write_bytes(original)
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
    X = featx.load(None, "block_2_add", cache=cache.root)[0]
    assert np.array_equal(X, featx.load(None, "block_2_add", cache=fresh)[0]) and np.abs(X).sum(axis=1).all()
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
        debris = {
            name: cache.root / name
            for name in (
                f".new-aaaaaaaaaaaa-{dead_pid}@{host}",
                f".new-bbbbbbbbbbbb-{live.pid}@{host}",
                f".new-cccccccccccc-{dead_pid}@another-host",
            )
        }
        for folder in debris.values():
            (folder / "layers").mkdir(parents=True)
        rc, out, err = cli("extract", "--data", data, *ARGS, "--layers", LAYERS, "--cache-dir", cache.root)
        assert rc == 0 and "nothing to do" in out, err  # also when the entry exists already
        assert [name for name, folder in debris.items() if folder.exists()] == list(debris)[1:]
        (debris[f".new-aaaaaaaaaaaa-{dead_pid}@{host}"] / "layers").mkdir(parents=True)
        rc, _, err = cli(
            "extract", "--data", data, *ARGS, "--layers", LAYERS, "--pool", "max", "--cache-dir", cache.root
        )
        assert rc == 0, err
        assert [name for name, folder in debris.items() if folder.exists()] == list(debris)[1:]
        assert len(cache.entries()) == 2 and not list(cache.root.glob(f".new-*-{os.getpid()}@*"))
    finally:
        live.kill()
        live.wait()


def test_no_op_extract_on_a_read_only_cache_says_nothing_to_do(cache, data, fork_server):
    paths = [cache.root, *cache.root.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        args = ["extract", "--data", data, *ARGS, "--layers", "block_1_project_BN", "--cache-dir", cache.root]
        noop = fork_server.run(args, unprivileged=True)
        assert noop.rc == 0 and "nothing to do: 1 layer(s) already cached" in noop.out, noop.err
        work = fork_server.run([*args[:-4], "--layers", "block_2_add", *args[-2:]], unprivileged=True)
        assert work.rc == 2 and "cannot lock cache entry" in one_line(work.err)
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize(
    "code, advice",
    [
        (errno.ENOSPC, "free disk space"),
        (errno.EFBIG, "free disk space"),
        (errno.EROFS, "fix the permissions"),
        (errno.ENOENT, "run `featx verify`"),
    ],
)
def test_write_failure_advice_fits_the_error(code, advice):
    assert _advice(OSError(code, os.strerror(code))).startswith(advice)


# ---- issue 18: nothing in index.h5 or a layer file is served once changed; crash debris never stays ----------


def _edit_attr(index: Path, name: str, edit) -> None:
    with h5py.File(index, "r+") as f:
        f.attrs[name] = json.dumps(edit(json.loads(f.attrs[name]))) if name != "description" else edit(f.attrs[name])


def test_reversed_class_names_are_refused_on_open_and_by_verify(cache):
    """Class names are not in the key (the features do not depend on them), but their digest is checked on open."""
    entry = cache.open()
    assert len(set(entry.class_names)) == 2
    _edit_attr(entry.path / "index.h5", "class_names", lambda names: names[::-1])
    with pytest.raises(RunFailed, match=MODIFIED):
        featx.load(None, cache=cache.root)
    for command in (["info"], ["fit", "--layers", "block_1_project_BN", "--clf", "knn"]):
        rc, _, err = cli(*command, "--cache-dir", cache.root)
        assert rc == 1 and re.search(MODIFIED, one_line(err)), err
    assert featx.verify(entry.path) == [f"{entry.name}: {CHANGED}"]
    rc, out, err = cli("verify", "--cache-dir", cache.root)
    assert rc == 1 and CHANGED in out and one_line(err)


@pytest.mark.parametrize(
    "name, edit",
    [
        (
            "layer_info",
            lambda info: {
                k: {**v, "n_features": v["n_features"] + 1} if k == "block_2_add" else v for k, v in info.items()
            },
        ),
        ("layer_info", lambda info: dict(reversed(info.items()))),  # the depth order orders a selection's columns
        ("backbone_args", lambda args: {**args, "weights": "/tmp/elsewhere.h5"}),
        ("split_settings", lambda split: {**split, "seed": 1}),
        ("description", lambda text: text.replace("folder", "manifest")),
    ],
)
def test_every_index_attribute_is_covered_by_a_digest(name, edit, cache):
    entry = cache.open()
    _edit_attr(entry.path / "index.h5", name, edit)
    with pytest.raises(RunFailed, match=MODIFIED):
        cache.open()
    assert featx.verify(entry.path) == [f"{entry.name}: {CHANGED}"]


def _decoded_like(entry, pristine) -> bool:
    return (
        entry.manifest == pristine.manifest
        and entry.data.keys() == pristine.data.keys()
        and all(
            entry.data[k].dtype == pristine.data[k].dtype and np.array_equal(entry.data[k], pristine.data[k])
            for k in pristine.data
        )
    )


def test_single_byte_flips_of_the_index_are_served_unchanged_or_refused_in_one_line(cache):
    """200 flips spread over index.h5 (digest record, attributes, HDF5 headers, arrays): each one either leaves
    what featx decodes identical, or is refused on open and reported by `featx verify` in one line each; nothing
    raises, and h5py never parses a damaged index (HDF5 can crash the process on one)."""
    entry = cache.open()
    index = entry.path / "index.h5"
    pristine, original = CacheEntry(entry.path), index.read_bytes()
    rng = np.random.default_rng(18)
    offsets = np.unique(np.linspace(0, len(original) - 1, 200).astype(int))
    changed = 0
    try:
        for offset in offsets:
            flipped = bytearray(original)
            flipped[offset] ^= int(rng.integers(1, 256))
            index.write_bytes(bytes(flipped))
            try:
                opened = CacheEntry(entry.path)
            except FeatxError as exc:
                opened, refusal = None, str(exc)
                assert "\n" not in refusal and "index.h5" in refusal, (offset, refusal)
            problems = featx.verify(entry.path)
            assert all(isinstance(p, str) and "\n" not in p for p in problems), (offset, problems)
            if opened is not None:
                assert _decoded_like(opened, pristine), f"flip at byte {offset} changed the index and was served"
                assert problems == [], (offset, problems)
            else:
                changed += 1
                assert problems, f"flip at byte {offset} was refused on open but passed verify ({refusal})"
            if offset % 4 == 0 or opened is not None:  # the command prints what verify returns
                rc, out, err = cli("verify", "--cache-dir", cache.root)
                assert (rc, err) == (0, "") if opened is not None else rc == 1 and one_line(err), (offset, out, err)
    finally:
        index.write_bytes(original)
    assert changed >= len(offsets) - 5, changed  # only bytes that decode the same (JSON spacing) are not refused
    assert featx.verify(entry.path) == []


def test_a_layer_file_copied_over_another_of_the_same_width_is_refused(cache):
    entry = cache.open()
    assert entry.layer_info["block_2_add"]["n_features"] == entry.layer_info["block_1_project_BN"]["n_features"]
    shutil.copyfile(entry.layer_file("block_1_project_BN"), entry.layer_file("block_2_add"))
    pattern = (
        rf"layer file '{re.escape(str(entry.layer_file('block_2_add')))}' was not published as layer block_2_add "
        r"of this entry \(copied, moved or edited\); run `featx verify` and re-extract"
    )
    with pytest.raises(RunFailed, match=pattern):
        featx.load(None, "block_2_add", cache=cache.root)
    rc, _, err = cli("fit", "--layers", "block_2_add", "--clf", "knn", "--cache-dir", cache.root)
    assert rc == 1 and re.search(pattern, one_line(err)), err
    with h5py.File(entry.layer_file("block_2_add"), "r+") as f:
        f["features"].attrs["layer"] = "block_2_add"  # the attribute made to agree changes nothing
    with pytest.raises(RunFailed, match=r"cannot be read \(it is \d+ bytes long, not the \d+ it was written with\)"):
        featx.load(None, "block_2_add", cache=cache.root)  # an edit by hand is refused before it is parsed
    reseal_layer(entry.layer_file("block_2_add"))  # and one crafted with its digest recomputed, by the binding
    with pytest.raises(RunFailed, match=pattern):
        featx.load(None, "block_2_add", cache=cache.root)
    assert featx.verify(entry.path) == [
        f"{entry.name}: layer block_2_add: layers/block_2_add.h5 was not published as this layer of this view and entry "
        "(copied, moved or edited; digest mismatch)"
    ]


def test_a_layer_file_moved_to_a_view_folder_with_its_view_attribute_edited_is_refused(cache):
    from featx.sources.views import VIEWS_VERSION

    entry = cache.open()
    moved = entry.layer_file("block_1_project_BN", "hflip")
    moved.parent.mkdir(parents=True)
    shutil.copyfile(entry.layer_file("block_1_project_BN"), moved)
    with h5py.File(moved, "r+") as f:
        f["features"].attrs.update({"view": "hflip", "views_version": VIEWS_VERSION})
    reseal_layer(moved)  # crafted with its digest recomputed: the binding refuses it
    assert cache.open().views == ["id", "hflip"]
    with pytest.raises(RunFailed, match=r"was not published as layer block_1_project_BN of view hflip of this entry"):
        featx.load(None, "block_1_project_BN", views=["id", "hflip"], cache=cache.root)
    problems = featx.verify(entry.path)
    assert problems == [
        f"{entry.name}: layer block_1_project_BN (view hflip): views/hflip/block_1_project_BN.h5 was "
        "not published as this layer of this view and entry (copied, moved or edited; digest mismatch)"
    ]


def _rewrite_without_digest(index: Path, **attrs) -> None:
    """index.h5 written as featx 0.x (format 2) wrote it: plain HDF5, no user block."""
    with h5py.File(index, "r") as f:
        values, arrays = {**f.attrs, **attrs}, {k: f[k][()] for k in f}
    with h5py.File(index, "w") as f:
        f.attrs.update(values)
        for name, array in arrays.items():
            f[name] = array


def test_an_index_of_the_previous_format_or_without_its_digest_is_refused_in_one_line(cache):
    """Format 2 indexes have no digest of their bytes: they are refused, never served unchecked (docs/reliability.md: re-extract)."""
    entry = cache.open()
    original = (entry.path / "index.h5").read_bytes()
    _rewrite_without_digest(entry.path / "index.h5", format_version=2)
    rc, _, err = cli("info", "--cache-dir", cache.root)
    assert (
        rc == 2
        and "index.h5 has format version 2, this featx reads version 4; delete that cache entry and "
        "re-run `featx extract`"
        in one_line(err)
    )
    assert "format version 2" in featx.verify(entry.path)[0]
    (entry.path / "index.h5").write_bytes(original)
    _rewrite_without_digest(entry.path / "index.h5")  # the same values, rewritten by hand: nothing vouches for them
    rc, _, err = cli("info", "--cache-dir", cache.root)
    assert rc == 1 and "index.h5' has no digest record; delete that cache entry" in one_line(err)
    assert "has no digest record" in featx.verify(entry.path)[0]


def test_a_finished_pass_left_by_a_killed_cleanup_is_not_counted_and_removed_by_the_next_extract(cache, data):
    """finalize renames work/ to .work-done-<pid> and deletes it; a kill in between leaves a full raw copy of the
    pass. `ls` does not count it, and the next extract (a no-op included) removes it, unless a live process holds
    the entry's lock (then that writer is the one to clean up)."""
    entry = cache.open()
    size, listed = entry.size_bytes(), cli("ls", "--cache-dir", cache.root)
    n = len(entry.labels)
    log = PassLog.start(entry, {"block_2_add": entry.layer_info["block_2_add"]}, n, 4, "float32")
    log.open_for_append()
    log.append({"block_2_add": np.ones((n, 24), np.float32)}, {})
    log.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    debris = entry.path / f".work-done-{int(dead.stdout)}"
    os.rename(entry.path / "work", debris)
    assert (debris / "block_2_add.raw").stat().st_size == n * 24 * 4
    assert cache.open().size_bytes() == size
    assert cli("ls", "--cache-dir", cache.root) == listed
    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(entry.path / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        rc, out, err = cli("extract", "--data", data, *ARGS, "--layers", LAYERS, "--cache-dir", cache.root)
        assert rc == 0 and "nothing to do" in out and debris.is_dir(), err
    finally:
        holder.kill()
        holder.wait()
    rc, out, err = cli("extract", "--data", data, *ARGS, "--layers", LAYERS, "--cache-dir", cache.root)
    assert rc == 0 and "nothing to do" in out, err
    assert not debris.exists() and featx.verify(entry.path) == [] and cache.open().size_bytes() == size
