"""featx.cache.safepath, the one helper every writer and deleter in a cache or runs folder goes through: nothing is
written, truncated, renamed or deleted through a link below the root, links are removed as links, and a read
follows a link only where it stays inside the root. Real files and links in a temporary folder.

Then the commands on caches and runs folders received from someone else (issue 31, part A): no symbolic link in
them makes featx write, truncate, rename or delete anything outside the folder it was given, none is read through
where it leads out; a dangling link is one line; a fit killed between publishing its run folder and logging it
leaves an orphan that `featx verify` reports and `featx prune` removes. Each attack is the issue's: a file outside
the cache ("precious") must keep its bytes, and featx must end with exit 0 or one `error:` line naming the link.
Entries are written by the store itself (tests/tiny_entry.py: no TensorFlow) unless the attack needs a real
extraction (those use the tiny_cache fixture and are slow)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import featx
from featx.cache import safepath
from featx.cache.atomic import atomic_path
from featx.cache.passlog import PassLog
from featx.cache.safepath import LinkRefused
from featx.cache.store import Cache
from featx.cli import build_parser
from featx.errors import FeatxError
from featx.runs.store import LOG_FILE, read_log
from tests.tiny_entry import LAYER, OTHER, make_entry

import imagegen
from helpers import FEATX, assert_one_line_error, cli, one_line, unwrapped, user_lines

PRECIOUS = b"outside: keep me\n"


@pytest.fixture
def root(tmp_path):
    """tmp/root (the cache) with a real folder `sub`, and tmp/outside/file beside it."""
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file").write_bytes(PRECIOUS)
    return tmp_path / "root"


def test_check_write_refuses_every_link_below_the_root_and_accepts_a_linked_root(root, tmp_path):
    assert safepath.check_write(root, root / "sub" / "new" / "deeper") == root / "sub" / "new" / "deeper"
    (root / "out").symlink_to(tmp_path / "outside")
    (root / "in").symlink_to(root / "sub")  # inside, but still a link: never followed to write
    for path in (root / "out", root / "out" / "file", root / "in" / "x"):
        with pytest.raises(LinkRefused, match=r"is a symbolic link \(to .*\); featx never writes"):
            safepath.check_write(root, path)
    assert issubclass(LinkRefused, FeatxError) and LinkRefused.exit_code == 2
    (tmp_path / "alias").symlink_to(root)  # the root a user names may itself be a link
    assert safepath.check_write(tmp_path / "alias", tmp_path / "alias" / "sub" / "f")
    with pytest.raises(LinkRefused, match="is not inside"):
        safepath.check_write(root, tmp_path / "outside" / "file")


def test_check_read_follows_only_links_that_stay_inside(root, tmp_path):
    (root / "sub" / "f").write_bytes(b"x")
    (root / "in").symlink_to(root / "sub")
    assert safepath.check_read(root, root / "in" / "f").read_bytes() == b"x"
    (root / "out").symlink_to(tmp_path / "outside")
    with pytest.raises(LinkRefused, match=r"'\S+out' is a symbolic link leading out of"):
        safepath.check_read(root, root / "out" / "file")
    (root / "sub" / "hop").symlink_to(root / "out" / "file")  # a link to a link that leads out
    with pytest.raises(LinkRefused, match=r"hop' is a symbolic link leading out"):
        safepath.check_read(root, root / "sub" / "hop")
    (root / "dangling").symlink_to(root / "missing")
    with pytest.raises(LinkRefused, match=r"dangling' is a symbolic link to a missing file"):
        safepath.check_read(root, root / "dangling")


def test_open_file_never_follows_a_link_nor_writes_a_file_with_other_names(root, tmp_path):
    outside = tmp_path / "outside" / "file"
    (root / "sub" / "lock").symlink_to(outside)
    with pytest.raises(LinkRefused, match=r"lock' is a symbolic link"):
        safepath.open_file(root, root / "sub" / "lock", os.O_RDWR | os.O_CREAT)
    os.link(outside, root / "sub" / "hard")
    with pytest.raises(LinkRefused, match=r"hard' is a file with 2 hard links"):
        safepath.open_file(root, root / "sub" / "hard", os.O_RDWR)
    os.mkfifo(root / "sub" / "fifo")
    with pytest.raises(LinkRefused, match=r"fifo' is not a plain file"):
        safepath.open_file(root, root / "sub" / "fifo", os.O_RDWR)
    assert outside.read_bytes() == PRECIOUS
    fd = safepath.open_file(root, root / "sub" / "own", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"mine")
    os.close(fd)
    assert (root / "sub" / "own").read_bytes() == b"mine"


def test_removing_a_link_removes_the_link_never_its_target(root, tmp_path):
    (root / "dir-link").symlink_to(tmp_path / "outside")
    (root / "file-link").symlink_to(tmp_path / "outside" / "file")
    safepath.rmtree(root, root / "dir-link")
    safepath.remove(root, root / "file-link")
    assert not os.path.lexists(root / "dir-link") and not os.path.lexists(root / "file-link")
    (root / "sub" / "inner").symlink_to(tmp_path / "outside")  # a link inside a folder being deleted
    safepath.rmtree(root, root / "sub")
    assert not (root / "sub").exists() and (tmp_path / "outside" / "file").read_bytes() == PRECIOUS
    (root / "via").symlink_to(tmp_path / "outside")
    with pytest.raises(LinkRefused):
        safepath.rmtree(root, root / "via" / "anything")
    with pytest.raises(LinkRefused):
        safepath.rename(root, root / "via" / "file", root / "stolen")
    assert (tmp_path / "outside" / "file").read_bytes() == PRECIOUS


def test_atomic_path_replaces_a_link_at_its_name_and_never_writes_through_one(root, tmp_path):
    outside = tmp_path / "outside" / "file"
    (root / "sub" / "index.h5").symlink_to(outside)
    (root / "sub" / f".index.h5.{os.getpid()}.tmp").symlink_to(outside)  # its temporary name, taken by a link
    with atomic_path(root / "sub" / "index.h5", root) as tmp:
        tmp.write_bytes(b"new")
    assert (root / "sub" / "index.h5").read_bytes() == b"new" and not (root / "sub" / "index.h5").is_symlink()
    assert outside.read_bytes() == PRECIOUS
    (root / "linked").symlink_to(tmp_path / "outside")
    with pytest.raises(LinkRefused), atomic_path(root / "linked" / "x", root) as tmp:
        tmp.write_bytes(b"never")
    assert sorted(os.listdir(tmp_path / "outside")) == ["file"]


RECEIVED_PRECIOUS = b"a user's notes: keep me\n" * 40


OLD_LOG = Path(__file__).parent / "data" / "runs-v2.sqlite"  # featx format 2's log: a fit and a compare, 4 runs


FIT = ["fit", "--clf", "logreg", "--layers", f"{LAYER},{OTHER}"]


@pytest.fixture
def cache(tmp_path) -> Path:
    """A cache folder with one tiny entry (written by the store, as extract writes one)."""
    make_entry(tmp_path / "cache", views=())
    return tmp_path / "cache"


@pytest.fixture
def precious(tmp_path) -> Path:
    """A user's file outside the cache."""
    path = tmp_path / "outside" / "notes.txt"
    path.parent.mkdir()
    path.write_bytes(RECEIVED_PRECIOUS)
    return path


def entry_of(cache: Path) -> Path:
    [entry] = [p for p in cache.iterdir() if p.name.startswith("tiny_net-") and not p.is_symlink()]
    return entry


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (links as their targets' names): what must not change."""
    return {
        str(p.relative_to(folder)): (
            os.readlink(p).encode() if p.is_symlink() else p.read_bytes() if p.is_file() else b""
        )
        for p in sorted(folder.rglob("*"))
    }


def old_runs(folder: Path) -> list[str]:
    """A runs folder holding a copy of OLD_LOG and a folder (with a file) per logged run; returns the run ids."""
    folder.mkdir(parents=True)
    shutil.copy(OLD_LOG, folder / LOG_FILE)
    ids = list(read_log(Cache(None, runs_dir=folder))["run_id"])
    for run_id in ids:
        (folder / run_id).mkdir()
        (folder / run_id / "metrics.json").write_text("{}")
    return ids


def test_rm_of_an_entry_whose_lock_links_outside_truncates_nothing(cache, precious):
    entry = entry_of(cache)
    (entry / ".lock").unlink(missing_ok=True)
    (entry / ".lock").symlink_to(precious)
    rc, out, err = cli("rm", entry.name, "--cache-dir", cache)
    assert precious.read_bytes() == RECEIVED_PRECIOUS, "featx rm truncated a file outside the cache through .lock"
    assert rc == 2 and re.search(r"\.lock' is a symbolic link .*never writes, truncates or deletes", one_line(err))
    assert entry.is_dir() and not list(cache.glob(".new-rm-*"))  # nothing removed


def test_rm_of_a_linked_entry_folder_is_refused_and_leaves_no_staging_link(cache, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(entry_of(cache), elsewhere / "tiny_net-0123456789ab")
    before = tree(elsewhere)
    link = cache / "tiny_net-0123456789ab"
    link.symlink_to(elsewhere / "tiny_net-0123456789ab")
    rc, out, err = cli("rm", link.name, "--cache-dir", cache)
    assert tree(elsewhere) == before
    assert rc == 2 and re.search(r"tiny_net-0123456789ab' is a symbolic link", one_line(err)), err
    assert link.is_symlink() and not list(cache.glob(".new-rm-*")), list(cache.iterdir())


def test_a_pending_pass_whose_raw_file_links_outside_is_refused_not_overwritten(cache, precious):
    """What `featx extract` does to resume a pass (PassLog.pending, open_for_append): the raw file of a committed
    batch, linked to a user's file, is never truncated or appended to."""
    entry = featx.Cache(cache).open()
    info = {LAYER: entry.layer_info[LAYER]}
    log = PassLog.start(entry, info, len(entry.labels), 2, "float32", views=("hflip",))  # a view not cached yet
    log.open_for_append()
    log.append({LAYER: np.ones((2, 4), np.float32)}, {})
    log.close()
    raw = entry.path / "work" / "hflip@stem%2Fconv%201.raw"
    raw.unlink()
    raw.symlink_to(precious)
    with pytest.raises(FeatxError, match=r"hflip@stem%2Fconv%201\.raw' is a symbolic link"):
        PassLog.pending(entry).open_for_append()  # pending() itself refuses it here
    assert precious.read_bytes() == RECEIVED_PRECIOUS
    problems = featx.verify(entry.path)
    assert len(problems) == 1 and "is a symbolic link" in problems[0], problems


def test_debris_links_are_removed_as_links_and_their_targets_kept(cache, tmp_path, precious):
    """A received entry's debris names (temporary files, .work-done-*, a dead creator's .new-*) that are links: the
    cleanup every extract runs removes the links, never what they point to."""
    entry = entry_of(cache)
    folder = tmp_path / "outside" / "folder"
    folder.mkdir()
    (folder / "kept.txt").write_bytes(RECEIVED_PRECIOUS)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    assert dead.wait() == 0
    links = [
        entry / f".index.h5.{dead.pid}.tmp",
        entry / "layers" / f".x.h5.{dead.pid}.tmp",
        entry / f".work-done-{dead.pid}",
        cache / f".new-0123456789ab-{dead.pid}@{socket.gethostname()}",
    ]
    for link in links:
        link.symlink_to(folder if "work-done" in link.name or ".new-" in link.name else precious)
    featx.Cache(cache).remove_debris()
    assert [link for link in links if os.path.lexists(link)] == []
    assert precious.read_bytes() == RECEIVED_PRECIOUS and (folder / "kept.txt").read_bytes() == RECEIVED_PRECIOUS


def test_a_dangling_link_among_layer_files_is_one_line_not_a_traceback(cache):
    entry = entry_of(cache)
    (entry / "layers" / "head.h5").unlink()
    (entry / "layers" / "head.h5").symlink_to(entry.parent / "nowhere.h5")
    rc, out, err = cli("ls", "--cache-dir", cache)
    assert rc == 0 and entry.name in out and err == "", err
    rc, out, err = cli("info", "--cache-dir", cache)
    assert rc == 0 and "head" not in out.split("classes:")[1], err  # not a cached layer
    rc, out, err = cli(*FIT[:-1], LAYER, "--cache-dir", cache)
    assert rc == 0, err
    assert_one_line_error(*cli(*FIT, "--cache-dir", cache)[::2], r"layer\(s\) head not cached")
    rc, out, err = cli("verify", "--cache-dir", cache)
    assert rc == 1 and re.search(r"layer head: '\S+head\.h5' is a symbolic link to a missing file", unwrapped(out)), out
    one_line(err)


def test_a_layer_file_linked_out_of_the_cache_is_not_read(cache, tmp_path):
    entry = entry_of(cache)
    outside = tmp_path / "outside-layer.h5"
    shutil.move(entry / "layers" / "head.h5", outside)
    (entry / "layers" / "head.h5").symlink_to(outside)
    pattern = r"head\.h5' is a symbolic link leading out of .*reads nothing outside"
    rc, out, err = cli(*FIT, "--cache-dir", cache)
    assert_one_line_error(rc, err, pattern)
    rc, out, err = cli("verify", "--cache-dir", cache)
    assert rc == 1 and re.search(pattern, unwrapped(out)), out
    inside = entry.parent / "moved-head.h5"  # a link that stays inside the cache is followed for reading
    shutil.move(outside, inside)
    (entry / "layers" / "head.h5").unlink()
    (entry / "layers" / "head.h5").symlink_to(inside)
    assert featx.load(None, [OTHER], cache=cache).X.shape == (6, 3)


def test_runs_folder_linked_outside_is_neither_pruned_nor_written(cache, tmp_path):
    outside = tmp_path / "outside-runs"
    ids = old_runs(outside)
    before = tree(outside)
    (cache / "runs").symlink_to(outside)
    for command in (["prune", "--keep-best", "1"], FIT, ["runs"], ["rm", ids[0]]):
        rc, out, err = cli(*command, "--cache-dir", cache)
        assert_one_line_error(rc, err, r"runs' is a symbolic link \(to .*outside-runs\); featx never writes")
        assert tree(outside) == before, command


def test_runs_log_linked_outside_is_never_rewritten(cache, tmp_path):
    outside = tmp_path / "outside" / LOG_FILE
    outside.parent.mkdir()
    shutil.copy(OLD_LOG, outside)
    (cache / "runs").mkdir()
    (cache / "runs" / LOG_FILE).symlink_to(outside)
    for command in (FIT, ["prune", "--keep-best", "0"]):
        rc, out, err = cli(*command, "--cache-dir", cache)
        assert_one_line_error(rc, err, r"runs\.sqlite' is a symbolic link")
        assert outside.read_bytes() == OLD_LOG.read_bytes() and sorted(os.listdir(outside.parent)) == [LOG_FILE]
    (cache / "runs" / LOG_FILE).unlink()
    shutil.copy(OLD_LOG, cache / "runs" / LOG_FILE)
    os.link(cache / "runs" / LOG_FILE, tmp_path / "outside" / "hard-link")  # the same file under another name
    rc, out, err = cli(*FIT, "--cache-dir", cache)
    assert_one_line_error(rc, err, r"runs\.sqlite' is a file with 2 hard links")


def test_reports_folder_linked_outside_loses_no_compare_folder(cache, tmp_path):
    outside = tmp_path / "outside-reports"
    (outside / "compare-20990101-000000-abcdef").mkdir(parents=True)
    (outside / "compare-20990101-000000-abcdef" / "results.csv").write_text("run_id\n20990101-000000-000000\n")
    (outside / "compare-20990101-000000-abcdef" / "my notes.txt").write_bytes(RECEIVED_PRECIOUS)
    before = tree(outside)
    (cache / "reports").symlink_to(outside)
    rc, out, err = cli("prune", "--keep-best", "0", "--cache-dir", cache)
    assert tree(outside) == before
    assert_one_line_error(rc, err, r"reports' is a symbolic link")


def test_a_compare_folder_that_is_a_link_stops_prune_before_anything_is_removed(cache, tmp_path):
    runs = cache / "runs"
    ids = old_runs(runs)
    outside = tmp_path / "outside-compare"
    outside.mkdir()
    (outside / "results.csv").write_text("run_id\n20990101-000000-000000\n")
    (cache / "reports").mkdir()
    (cache / "reports" / "compare-20990101-000000-abcdef").symlink_to(outside)
    rc, out, err = cli("prune", "--keep-best", "0", "--cache-dir", cache)
    assert_one_line_error(rc, err, r"compare-20990101-000000-abcdef' is a symbolic link")
    assert (outside / "results.csv").is_file() and sorted(read_log(cache)["run_id"]) == sorted(ids)


def test_a_pipeline_file_cannot_turn_on_unsafe_loading(tmp_path):
    evil = tmp_path / "evil.keras"
    evil.write_bytes(b"PK not read: the file is refused first")
    pipeline = tmp_path / "evil.toml"
    pipeline.write_text(
        f'data = "elpv"\nbackbone = "{evil}"\nlayers = "doubled"\n[extract]\nunsafe = true\n'
        '[[steps]]\nkind = "fit"\nclf = "knn"\n'
    )
    rc, out, err = cli("run", pipeline, "--cache-dir", tmp_path / "cache")
    assert_one_line_error(rc, err, r"\[extract\] of .*evil\.toml' sets unsafe, which a pipeline file may not.*--unsafe")
    assert not (tmp_path / "cache").exists()
    assert build_parser().parse_args(["run", str(pipeline), "--unsafe"]).unsafe  # the person's flag


def test_an_orphan_run_folder_is_reported_by_verify_and_removed_by_prune(cache):
    rc, out, err = cli(*FIT, "--cache-dir", cache)
    assert rc == 0, err
    [run_id] = read_log(cache)["run_id"]
    orphan = cache / "runs" / "20990101-000000-abcdef"
    shutil.copytree(cache / "runs" / run_id, orphan)  # a complete run folder no row lists: a fit killed at commit
    rc, out, err = cli("verify", "--cache-dir", cache)
    shown = unwrapped(out)
    assert rc == 1 and f"orphan run folder {orphan}" in shown and "`featx prune` removes it" in shown, out
    one_line(err)
    rc, out, err = cli("prune", "--keep-best", "100", "--cache-dir", cache)
    assert rc == 0 and "1 orphan run folder(s)" in out, err
    assert sorted(p.name for p in (cache / "runs").iterdir() if p.is_dir()) == [run_id]
    assert cli("verify", "--cache-dir", cache)[0] == 0


@pytest.mark.slow  # two featx processes
def test_a_fit_killed_between_publishing_and_logging_leaves_an_orphan_that_prune_removes(cache):
    from featx.runs.folders import KILL_AT

    killed = subprocess.run(
        [*FEATX, *FIT, "--cache-dir", str(cache)], capture_output=True, text=True, env={**os.environ, KILL_AT: "1"}
    )
    assert killed.returncode == -9, killed.stderr
    folders = [p for p in (cache / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == 1 and (folders[0] / "model.skops").is_file() and read_log(cache).empty
    rc, out, err = cli("verify", "--cache-dir", cache)
    assert rc == 1 and f"orphan run folder {folders[0]}" in unwrapped(out), out
    rc, out, err = cli("prune", "--keep-best", "1", "--cache-dir", cache)
    assert rc == 0 and not folders[0].exists(), err
    assert cli("verify", "--cache-dir", cache)[0] == 0


LAYERS = "block_1_project_BN,block_3_project_BN"


ARGS = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "96", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("received_data")
    imagegen.copy_elpv_images(root, 8, n_classes=2)
    return root


@pytest.fixture
def extracted(data, tiny_cache, tmp_path) -> Path:
    shutil.copytree(tiny_cache(data, LAYERS, batch_size=4), tmp_path / "real")
    return tmp_path / "real"


def extract(data, cache, layers):
    return cli("extract", "--data", data, *ARGS, "--layers", layers, "--cache-dir", cache)


def test_extract_never_truncates_a_lock_linked_outside(data, extracted, precious):
    [entry] = featx.Cache(extracted).entries()
    (entry.path / ".lock").unlink(missing_ok=True)
    (entry.path / ".lock").symlink_to(precious)
    for layers, debris in ((LAYERS, True), ("block_2_add", False)):  # a no-op with debris to remove, a new layer
        if debris:
            (entry.path / "layers" / ".block_2_add.h5.999999.tmp").write_bytes(b"debris of a killed writer")
        rc, out, err = extract(data, extracted, layers)
        assert precious.read_bytes() == RECEIVED_PRECIOUS, f"extract --layers {layers} truncated a file through .lock"
        if rc:
            assert_one_line_error(rc, err, r"\.lock' is a symbolic link")
    assert "block_2_add" not in featx.Cache(extracted).open().layers


def test_resuming_a_pass_never_writes_through_a_linked_raw_file(data, extracted, precious):
    [entry] = featx.Cache(extracted).entries()
    n, info = len(entry.labels), {"block_2_add": entry.layer_info["block_2_add"]}
    log = PassLog.start(entry, info, n, 4, "float32")
    log.open_for_append()
    log.append({"block_2_add": np.ones((4, 24), np.float32)}, {})
    log.close()
    (entry.path / "work" / "block_2_add.raw").unlink()
    (entry.path / "work" / "block_2_add.raw").symlink_to(precious)
    rc, out, err = extract(data, extracted, "block_2_add")
    assert precious.read_bytes() == RECEIVED_PRECIOUS, "the resumed pass overwrote a file outside the cache"
    assert_one_line_error(rc, err, r"block_2_add\.raw' is a symbolic link")


@pytest.mark.slow  # Keras, an extraction
def test_a_pipeline_file_asking_for_unsafe_runs_no_code_and_the_flag_does(data, tmp_path):
    """The issue's attack: a Lambda layer that writes a file when the model is loaded. The pipeline file's
    `unsafe = true` is refused before the model is opened; `featx run FILE --unsafe` is the person's choice."""
    import keras

    marker = tmp_path / "the-lambda-ran"
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    code = f"lambda t: (open({str(marker)!r}, 'a').close(), t * 2.0)[1]"
    doubled = keras.layers.Lambda(eval(code), name="doubled")(x)  # noqa: S307  (the attacker's code)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(doubled)).save(tmp_path / "evil.keras")
    marker.unlink(missing_ok=True)  # building it ran the lambda once
    recipe = f'data = "{data}"\nbackbone = "{tmp_path / "evil.keras"}"\nlayers = "doubled"\n'
    steps = '[[steps]]\nkind = "fit"\nclf = "logreg"\n'
    (tmp_path / "evil.toml").write_text(recipe + "[extract]\nunsafe = true\n" + steps)
    rc, out, err = cli("run", tmp_path / "evil.toml", "--cache-dir", tmp_path / "cache")
    assert_one_line_error(rc, err, r"sets unsafe, which a pipeline file may not.*--unsafe")
    assert not marker.exists(), "the pipeline file made featx run a Lambda layer's code"
    (tmp_path / "plain.toml").write_text(recipe + steps)
    rc, out, err = cli("run", tmp_path / "plain.toml", "--cache-dir", tmp_path / "cache")
    assert_one_line_error(rc, err, r"Lambda layer, which Keras safe mode refuses")
    assert not marker.exists()
    rc, out, err = cli("run", tmp_path / "plain.toml", "--unsafe", "--cache-dir", tmp_path / "cache")
    assert rc == 0 and marker.exists(), user_lines(err)[-3:]
