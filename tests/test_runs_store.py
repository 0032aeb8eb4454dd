"""The runs log (SQLite) and run folders under real conditions: concurrent fit processes, a damaged or foreign
log file, a full disk during a fit, a read-only cache. Every `featx` here is a real process forked from
tests/forkserver.py (real file-size limits, root without its permission override), on a small real cache
(ELPV images through MobileNetV2 at 96 px, random weights: the numbers do not matter, the files do).

And the store itself: format 4 rows (spec and evaluation whole, their hash), the migration of a real format-3 log
written by an older featx, and the module boundaries of the split runs.py (only the store runs SQL, only models
loads model files).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.experiments.fit import fit
from featx.runs.listing import export_csv, runs_table
from featx.runs.listing import list_runs as runs
from featx.runs.store import LOG_FILE, LOG_VERSION, find_run, read_log

import forkserver
from helpers import assert_one_line_error, cli, user_lines

FIT = ["fit", "--layers", "out_relu", "--clf", "logreg", "--n-jobs", "1"]


def featx(*args, **kwargs) -> forkserver.Child:
    return forkserver.server().run([str(a) for a in args], **kwargs)


def assert_child_error(child: forkserver.Child, pattern: str, code: int = 2) -> str:
    """The process ended with exit `code` and one `error: ` line matching `pattern`, no traceback."""
    return assert_one_line_error(child.rc, child.err, pattern, code)


@pytest.fixture(scope="module")
def small_cache(tiny_cache, fork_server) -> Path:
    """The session's small ELPV cache (48 images; final = out_relu, and block_15_add), shared read-only: tests copy it."""
    return tiny_cache("elpv", "final,block_15_add", limit=48)


@pytest.fixture
def cache(small_cache, tmp_path) -> Path:
    """A private copy of the small cache (tests damage their log or make it read-only)."""
    copy = tmp_path / "cache"
    shutil.copytree(small_cache, copy)
    return copy


def run_folders(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "runs").iterdir() if p.is_dir())


@pytest.mark.slow
def test_concurrent_fits_keep_every_row(cache, fork_server):
    children = [fork_server.start([*FIT, "--cache-dir", str(cache), "--seed", str(i)]) for i in range(6)]
    assert [c.wait() for c in children] == [0] * 6, [c.err for c in children]
    log = read_log(cache)
    assert len(log) == 6 and log["run_id"].is_unique
    assert sorted(log["seed"]) == list(range(6))
    assert run_folders(cache) == sorted(log["run_id"])  # every row has its complete folder, nothing else
    assert all((cache / "runs" / r / "model.skops").is_file() for r in log["run_id"])
    with sqlite3.connect(cache / "runs" / LOG_FILE) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == LOG_VERSION


@pytest.mark.slow
def test_full_disk_during_fit_leaves_no_run_and_no_row(cache):
    assert featx(*FIT, "--cache-dir", cache).rc == 0  # the log exists; the limit below only hits the run's files
    before = read_log(cache)
    log_bytes = (cache / "runs" / LOG_FILE).read_bytes()
    # 40 kB: above the log's pages, below a 300-tree forest's model file
    full = featx(
        "fit", "--layers", "out_relu", "--clf", "rf", "--n-estimators", 300, "--cache-dir", cache, fsize=40_000
    )
    assert_child_error(full, r"writing run \S+ in .*runs failed \(File too large\); nothing was logged", code=1)
    assert run_folders(cache) == list(before["run_id"])  # no half run, no staging folder
    pd.testing.assert_frame_equal(read_log(cache), before)
    assert (cache / "runs" / LOG_FILE).read_bytes() == log_bytes


@pytest.mark.slow
def test_damaged_or_foreign_log_is_one_line_and_never_appended_to(cache, tmp_path):
    assert featx(*FIT, "--cache-dir", cache).rc == 0
    run_id = read_log(cache)["run_id"][0]
    log = cache / "runs" / LOG_FILE
    for content in (b'run_id,timestamp\n"unterminated,\n', os.urandom(8192), log.read_bytes()[:3000]):
        log.write_bytes(content)
        for stale in log.parent.glob(f"{LOG_FILE}-*"):  # a WAL beside a replaced file would be replayed into it
            stale.unlink()
        for args in (("runs",), ("predict", "--model", run_id, tmp_path), FIT):
            child = featx(*args, "--cache-dir", cache)
            assert_child_error(child, rf"runs log .*{LOG_FILE} is damaged or not a featx runs database .*move it away")
        assert log.read_bytes() == content  # fit did not write into it
        assert run_folders(cache) == [run_id]


def test_unknown_log_version_or_foreign_database_is_refused(tmp_path):
    from featx.runs.store import prepare_log

    folder = tmp_path / "runs"
    folder.mkdir()
    with sqlite3.connect(folder / LOG_FILE) as db:
        db.execute("CREATE TABLE runs (x)")
        db.execute(f"PRAGMA user_version={LOG_VERSION + 1}")
    for check in (read_log, prepare_log):
        with pytest.raises(
            FeatxError, match=rf"format version {LOG_VERSION + 1}, this featx reads version {LOG_VERSION}"
        ):
            check(tmp_path)
    with sqlite3.connect(folder / LOG_FILE) as db:
        db.execute("PRAGMA user_version=0")  # someone else's database that happens to sit there
    with pytest.raises(FeatxError, match="is damaged or not a featx runs database .*holds tables but no featx format"):
        prepare_log(tmp_path)
    with sqlite3.connect(folder / LOG_FILE) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["runs"]  # left as it was


@pytest.mark.slow
def test_old_csv_log_is_migrated_and_exported(cache, tmp_path):
    assert featx(*FIT, "--cache-dir", cache).rc == 0
    first = read_log(cache)
    shutil.rmtree(cache / "runs" / first["run_id"][0])
    for path in (cache / "runs").glob(f"{LOG_FILE}*"):
        path.unlink()
    old = first.assign(run_id="20250101-000000-abcdef", model_path="20250101-000000-abcdef/model.joblib")
    old.to_csv(cache / "runs" / "runs.csv", index=False)  # the log as featx wrote it before SQLite
    assert list(read_log(cache)["run_id"]) == list(old["run_id"])  # read as it is until the first fit
    assert featx(*FIT, "--cache-dir", cache, "--seed", 1).rc == 0
    log = read_log(cache)
    assert list(log["run_id"][:1]) == list(old["run_id"]) and len(log) == 2
    assert log["val_accuracy"][0] == pytest.approx(first["val_accuracy"][0])  # the same stored number, read back
    exported = featx("runs", "--cache-dir", cache, "--csv", tmp_path / "all.csv")
    assert exported.rc == 0 and "saved" in exported.out
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "all.csv", dtype={"run_id": str}), log, check_dtype=False)
    assert export_csv(tmp_path / "api.csv", cache).read_bytes() == (tmp_path / "all.csv").read_bytes()
    with pytest.raises(FeatxError, match="model.joblib.*no longer loads.*fit it again"):
        from featx.runs.models import load_model

        load_model("20250101", cache)
    assert find_run("20250101", cache)["model_path"].endswith(".joblib")


@pytest.mark.parametrize(
    "text",
    [
        'run_id,model_path,model_sha256\n"20250101,m,0\n',  # unterminated quote
        "run_id,model_path,model_sha256\n1,m,0\n2,m,0,extra\n",  # wrong field count
        "",
    ],
)
def test_malformed_old_csv_log_is_one_line(cache, text):
    (cache / "runs").mkdir()
    (cache / "runs" / "runs.csv").write_text(text)
    message = r"cannot migrate the old runs log .*runs.csv .*repair or move the CSV away"
    with pytest.raises(FeatxError, match=message):
        runs(cache)
    assert_child_error(featx(*FIT, "--cache-dir", cache), message)
    assert run_folders(cache) == [] and (cache / "runs" / "runs.csv").read_text() == text
    with pytest.raises(FeatxError, match=message):  # still, after the failed fit: not an empty log
        runs(cache)


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.slow
def test_read_only_cache_ends_in_one_line_or_writes_to_runs_dir(cache, tmp_path):
    assert featx(*FIT, "--cache-dir", cache).rc == 0
    run_id = read_log(cache)["run_id"][0]
    image = tmp_path / "cell.png"
    _first_cached_image(cache, image)
    mine = tmp_path / "mine"
    _read_only(cache)
    try:

        def run(*args):
            return featx(*args, "--cache-dir", cache, unprivileged=True)

        for args in (
            FIT,
            ("compare", "--layer-sets", "out_relu", "--clf", "knn"),
            ("plot-tsne", "--layers", "out_relu"),
        ):
            assert_child_error(
                run(*args), r"cannot write (runs|reports) in .*cache/(runs|reports) \(.*\); pass --runs-dir"
            )
        assert_child_error(run("predict", "--model", run_id, image), r"cannot write predictions in .*; pass --output")
        listed = run("runs")
        assert listed.rc == 0 and run_id[-6:] in listed.out, listed.err  # its short id
        predicted = run("predict", "--model", run_id, image, "--output", tmp_path / "p.csv")
        assert predicted.rc == 0 and pd.read_csv(tmp_path / "p.csv")["label"].notna().all(), predicted.err
        assert run(*FIT, "--runs-dir", mine).rc == 0
        assert run("compare", "--layer-sets", "out_relu", "--clf", "knn", "--runs-dir", mine).rc == 0
        assert run("plot-tsne", "--layers", "out_relu", "--runs-dir", mine).rc == 0
    finally:
        _writable(cache)
    assert (
        len(read_log(cache)) == 1 and len(read_log(Cache(None, runs_dir=mine))) == 4
    )  # fit, compare's knn and its 2 baselines
    assert len(list((mine / "reports").glob("compare-*/results.csv"))) == 1 and list(
        (mine / "reports").glob("tsne-*.png")
    )


def _first_cached_image(cache: Path, target: Path) -> None:

    entry = Cache(cache).open(None)
    shutil.copy(Path(entry.attrs["root"]) / entry.relpaths[0], target)


@pytest.mark.slow
def test_fit_killed_while_writing_its_run_leaves_nothing_logged_and_its_debris_goes(cache, fork_server):
    import socket
    import time

    assert featx(*FIT, "--cache-dir", cache).rc == 0
    before = read_log(cache)
    child = fork_server.start(
        ["fit", "--layers", "out_relu", "--clf", "rf", "--n-estimators", "300", "--cache-dir", str(cache)]
    )
    while child.poll() is None and not list((cache / "runs").glob(".staging-*")):
        time.sleep(0.002)
    assert child.kill() == -9  # killed while its run folder was being written
    debris = list((cache / "runs").glob(".staging-*"))
    assert len(debris) == 1 and debris[0].name.endswith(f"-{child.pid}@{socket.gethostname()}")
    pd.testing.assert_frame_equal(read_log(cache), before)
    live = cache / "runs" / f".staging-20990101-000000-abcdef-{os.getpid()}@{socket.gethostname()}"
    live.mkdir()  # a fit still writing (this process is alive): never touched
    assert featx(*FIT, "--cache-dir", cache, "--seed", 1).rc == 0
    assert [p.name for p in (cache / "runs").glob(".staging-*")] == [live.name]
    assert run_folders(cache) == sorted([live.name, *read_log(cache)["run_id"]])


# --- logs received from someone else, damaged logs, kills of rm/prune, splits (issue 18)

OLD_LOG = Path(__file__).parent / "data" / "runs-v2.sqlite"  # written by featx's format 2 (a fit, a compare: 4 runs)


def old_log(tmp_path: Path) -> Path:
    """A cache folder (no entries) whose runs log is a copy of OLD_LOG, each run with a folder."""
    runs_folder = tmp_path / "cache" / "runs"
    runs_folder.mkdir(parents=True)
    shutil.copy(OLD_LOG, runs_folder / LOG_FILE)
    for run_id in read_log(tmp_path / "cache")["run_id"]:
        (runs_folder / run_id).mkdir()
        (runs_folder / run_id / "metrics.json").write_text("{}")
    return tmp_path / "cache"


def one_error_line(err: str, pattern: str) -> None:
    lines = user_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), err


def test_foreign_run_ids_in_the_log_are_never_acted_on(tmp_path):
    cache = old_log(tmp_path)
    ids = list(read_log(cache)["run_id"])
    victims = [tmp_path / "victim", tmp_path / "elsewhere" / "victim"]
    for victim in victims:
        victim.mkdir(parents=True)
        (victim / "precious").write_text("keep me")
    with sqlite3.connect(cache / "runs" / LOG_FILE) as db:
        db.execute("UPDATE runs SET run_id = '../../victim' WHERE run_id = ?", (ids[0],))  # relative to the runs folder
        db.execute("UPDATE runs SET run_id = ? WHERE run_id = ?", (str(victims[1]), ids[1]))  # an absolute path
    (cache / "runs" / ".staging-rm-..").mkdir()
    image = tmp_path / "cell.png"
    image.write_bytes(b"not read: the run is refused first")

    for target in ("../../victim", str(victims[1])):
        code, out, err = cli("rm", target, "--cache-dir", cache)
        assert code == 2 and "removed run" not in out
        one_error_line(err, r"invalid run id .*not acted on; nothing was removed")
        code, out, err = cli("predict", "--model", target, image, "--cache-dir", cache)
        assert code == 2
        one_error_line(err, r"invalid run id in .*runs.sqlite .*not acted on")
    code, out, err = cli("prune", "--keep-best", "0", "--cache-dir", cache)
    assert code == 0 and "warning: runs log" in out and "2 row(s) whose run_id is not a featx run id" in out
    assert "removed 2 run(s)" in out
    for victim in victims:
        assert [p.name for p in victim.iterdir()] == ["precious"]  # nothing deleted, renamed or written there
    with sqlite3.connect(cache / "runs" / LOG_FILE) as db:  # those rows are left as they are
        assert sorted(r[0] for r in db.execute("SELECT run_id FROM runs")) == sorted(["../../victim", str(victims[1])])
    code, out, err = cli("runs", "--cache-dir", cache)
    assert code == 0 and "no runs yet" in out
    assert re.fullmatch(r"warning: runs log \S+ has 2 row\(s\) whose run_id is not a featx run id .*\n", err)


def test_a_run_folder_left_renamed_by_a_killed_older_rm_is_given_back(tmp_path):
    cache = old_log(tmp_path)
    run_id = read_log(cache)["run_id"][0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a real pid, now gone
    assert dead.wait() == 0
    staged = cache / "runs" / f".staging-rm-{run_id}-{dead.pid}@{socket.gethostname()}"
    (cache / "runs" / run_id).rename(staged)  # what featx before format 3 left when killed in rm/prune
    code, out, err = cli("prune", "--keep-best", "100", "--cache-dir", cache)  # any command writing the log
    assert code == 0, err
    assert (cache / "runs" / run_id / "metrics.json").is_file() and not staged.exists()
    assert run_folders(cache) == sorted(read_log(cache)["run_id"])


@pytest.fixture(scope="module")
def compared(small_cache, tmp_path_factory, fork_server) -> Path:
    """The small cache with 4 logged runs, each with its model (compare knn, logreg and the 2 baselines)."""
    base = tmp_path_factory.mktemp("compared") / "cache"
    shutil.copytree(small_cache, base)
    made = featx(
        "compare", "--layer-sets", "out_relu", "--clf", "knn,logreg", "--save-models", "all", "--cache-dir", base
    )
    assert made.rc == 0, made.err
    return base


@pytest.mark.slow
@pytest.mark.parametrize("command", ["prune", "rm"])
def test_rm_and_prune_killed_at_every_step_lose_no_listed_run(command, compared, tmp_path):
    from featx.runs.folders import KILL_AT
    from featx.runs.models import load_model

    base = compared
    logged = set(read_log(base)["run_id"])
    args = ["prune", "--keep-best", "1"] if command == "prune" else ["rm", *sorted(logged)[:3]]
    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    assert featx(*args, "--cache-dir", reference).rc == 0
    kept = set(read_log(reference)["run_id"])
    assert len(kept) == 1 and run_folders(reference) == sorted(kept)

    for step in range(1, 20):
        cache = tmp_path / f"killed-{step}"
        shutil.copytree(base, cache)
        child = featx(*args, "--cache-dir", cache, env={KILL_AT: str(step)})
        if child.rc == 0:
            break
        assert child.rc == -9, child.err
        listed = set(read_log(cache)["run_id"])
        assert listed in (logged, kept)  # all removed from the log or none
        for run_id in listed:  # every listed run still has its model, and it loads
            pipeline, _ = load_model(run_id, cache)
            assert hasattr(pipeline, "predict")
        assert featx("prune", "--keep-best", "100", "--cache-dir", cache).rc == 0  # the next writer finishes the rest
        assert set(read_log(cache)["run_id"]) == listed
        assert run_folders(cache) == sorted(listed)  # removed runs' folders gone, no staging debris
    assert step == 2 + 2 * 3 + 1  # killed before and after the commit, and after each of 3 renames and deletions
    assert run_folders(cache) == sorted(kept) and set(read_log(cache)["run_id"]) == kept


def test_damaged_log_is_one_line_for_runs_rm_and_prune_and_is_not_written(tmp_path):
    for damage in ("dropped table", "corrupt page", "text in a real column", "text in an integer column"):
        cache = old_log(tmp_path / damage.replace(" ", "-"))
        log = cache / "runs" / LOG_FILE
        run_id = read_log(cache)["run_id"][0]
        if damage == "corrupt page":
            data = bytearray(log.read_bytes())
            data[4096:8192] = os.urandom(4096)  # page 2: the root of table runs
            log.write_bytes(bytes(data))
        else:
            sql = {
                "dropped table": "DROP TABLE runs",
                "text in a real column": "UPDATE runs SET val_accuracy = 'high'",
                "text in an integer column": "UPDATE runs SET seed = 'zero'",
            }[damage]
            with sqlite3.connect(log) as db:
                db.execute(sql)
            sqlite3.connect(log).close()
        content = log.read_bytes()
        expected = (
            r"runs log \S+runs.sqlite is damaged or not a featx runs database .*move it away"
            if "page" in damage or "table" in damage
            else r"runs log \S+runs.sqlite has a non-number .* in its numeric column (val_accuracy|seed) .*restore "
            r"the log from a backup"
        )
        for args in (("runs",), ("rm", run_id), ("prune", "--keep-best", "0"), ("runs", "--csv", tmp_path / "x.csv")):
            code, out, err = cli(*args, "--cache-dir", cache)
            assert code == 2 and "removed run" not in out, (damage, args, err)
            one_error_line(err, expected)
        assert log.read_bytes() == content and len(run_folders(cache)) == 4 and not (tmp_path / "x.csv").exists()


def test_empty_log_file_is_a_warning_not_silence(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / LOG_FILE).write_bytes(b"")
    code, out, err = cli("runs", "--cache-dir", tmp_path)
    assert code == 0 and "no runs yet" in out
    assert re.fullmatch(r"warning: runs log \S+ is an empty file \(0 bytes\).*restore it from a backup.*\n", err)


def test_a_format_2_log_is_read_as_it_is_then_migrated_with_its_splits_unknown(tmp_path):
    from featx.runs.store import COLUMNS, append_run

    cache = old_log(tmp_path)
    log = cache / "runs" / LOG_FILE
    before = read_log(cache)
    assert len(before) == 4 and before["split_fingerprint"].isna().all()
    code, out, err = cli("runs", "--cache-dir", cache)
    assert code == 0 and all(r[-6:] in out for r in before["run_id"]) and "different splits" not in out and not err
    with sqlite3.connect(log) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # reading writes nothing
    new = {
        **before.iloc[0][list(COLUMNS)].to_dict(),
        "run_id": "20990101-000000-abcdef",
        "split_fingerprint": "ab" * 8,
        "val_accuracy": 0.1,
    }
    append_run(cache, new)
    (cache / "runs" / new["run_id"]).mkdir()
    with sqlite3.connect(log) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LOG_VERSION == 4
        assert [r[0] for r in db.execute("SELECT split_fingerprint FROM runs ORDER BY seq")] == [None] * 4 + ["ab" * 8]
    after = read_log(cache)
    same = [c for c in after.columns if c != "split_fingerprint"]
    pd.testing.assert_frame_equal(after.loc[:3, same], before[same])

    listed = runs_table(cache)  # the new run is worse, yet ranked on its own: first, as its split is the most recent
    table = listed.table
    assert list(table["run_id"][:1]) == [new["run_id"]] and list(table["split"]) == ["abababab"] + ["unknown"] * 4
    assert "made on 2 different splits" in listed.order
    code, out, err = cli("prune", "--keep-best", "1", "--cache-dir", cache)
    assert code == 0 and "different splits" in out, err
    assert sorted(read_log(cache)["run_id"]) == sorted([new["run_id"], runs(cache)["run_id"][1]])
    assert len(read_log(cache)) == 2 and run_folders(cache) == sorted(read_log(cache)["run_id"])


@pytest.mark.slow
def test_runs_on_a_rewritten_split_are_ranked_apart_and_never_reused(cache):
    from featx.runs.reuse import logged_runs
    from featx.runs.store import split_fingerprint
    from featx.selection.spec import FitSpec

    assert featx(*FIT, "--cache-dir", cache).rc == 0
    split = featx(
        "extract",
        "--data",
        "elpv",
        "--backbone",
        "mobilenet_v2",
        "--weights",
        "none",
        "--input-size",
        96,
        "--limit",
        48,
        "--layers",
        "out_relu",
        "--cache-dir",
        cache,
        "--quiet",
        "--split",
        "0.5,0.25,0.25",
    )
    assert split.rc == 0 and "split updated" in split.out, split.err
    assert featx(*FIT, "--cache-dir", cache).rc == 0
    log = read_log(cache)
    entry = Cache(cache).open(None)
    assert log["split_fingerprint"].nunique() == 2 and log["split_fingerprint"].iloc[-1] == split_fingerprint(entry)
    listed = featx("runs", "--cache-dir", cache)
    assert listed.rc == 0 and "made on 2 different splits" in listed.out
    assert len(re.findall(r"^split \w+, scored by ", listed.out, re.M)) == 2  # one block per split
    spec = FitSpec(classifier="logreg", n_jobs=1)
    now = split_fingerprint(entry)
    assert logged_runs(log, entry.key, [(["out_relu"], spec)], split=now) == [log["run_id"].iloc[-1]]
    assert logged_runs(log.iloc[:1], entry.key, [(["out_relu"], spec)], split=now) is None  # same fit, other split


@pytest.mark.slow
def test_full_disk_while_logging_says_disk_full_and_keeps_the_log(cache):
    assert featx(*FIT, "--cache-dir", cache).rc == 0
    before = read_log(cache)
    full = featx("compare", "--layer-sets", "out_relu", "--clf", "knn,logreg", "--cache-dir", cache, fsize=20_000)
    assert_child_error(
        full, r"runs log \S+ could not be written: disk full \(File too large\); the log is intact", code=1
    )
    pd.testing.assert_frame_equal(read_log(cache), before)
    listed = featx("runs", "--cache-dir", cache)
    assert listed.rc == 0 and before["run_id"][0][-6:] in listed.out and not user_lines(listed.err)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (a real full disk: ENOSPC), where this process may mount one (root)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_full_tmpfs_says_disk_full_and_leaves_no_half_report(cache, small_disk):
    mine = small_disk / "runs"
    assert featx(*FIT, "--cache-dir", cache, "--runs-dir", mine).rc == 0
    before = read_log(Cache(None, runs_dir=mine))
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"x" * (stat.f_bavail * stat.f_frsize - 40 * 1024))  # 40 KiB left
    full = featx("tune", "--layers", "out_relu", "--clf", "logreg", "--cache-dir", cache, "--runs-dir", mine)
    assert_child_error(full, r"(could not be written|failed) .*(disk full|No space left on device)", 1)
    assert not list((mine / "reports").glob("tune-*"))  # no empty or partial report folder
    (small_disk / "filler").unlink()
    pd.testing.assert_frame_equal(read_log(Cache(None, runs_dir=mine)), before)
    assert sorted(p.name for p in mine.iterdir() if p.is_dir() and p.name != "reports") == list(before["run_id"])


@pytest.mark.slow  # a Keras dense head
def test_random_bytes_in_head_keras_are_named_corrupt(digits, tmp_path):
    from featx.runs.models import _load_pipeline, save_model
    from featx.selection.spec import FitSpec

    X, y, split = digits
    spec = FitSpec(classifier="dense", params={"hidden": (8,), "epochs": 1})
    model = spec.pipeline().fit(X[split == "train"], y[split == "train"])
    save_model(model, tmp_path / "model.skops")
    (tmp_path / "head.keras").write_bytes(os.urandom(4096))
    with pytest.raises(FeatxError, match=r"head.keras of run r is corrupt: not a Keras file"):
        _load_pipeline(tmp_path / "model.skops", "r")


# --- the store: module boundaries, the real format-3 log, format 4 rows

FEATX = Path(__file__).parent.parent / "featx"


V3 = (
    Path(__file__).parent / "data" / "runs-v3"
)  # a runs folder featx's format 3 wrote (main at 1eacef3; data/README.md)


V3_ENTRY = "efficientnet_lite0-7b22fba28518"  # the elpv_cache fixture's entry, which its runs were fitted on


# the runs of V3 whose old columns say their spec and evaluation exactly (K-fold CV and val scores of their own)
V3_EXACT = {
    "20261202-121646-14a6b4",
    "20261202-121650-709341",
    "20261202-121650-52d2f0",
    "20261202-121650-731cfb",
    "20261202-122107-8a83ce",
}


def v3_runs(tmp_path: Path) -> Path:
    """A copy of the format-3 runs folder."""
    shutil.copytree(V3, tmp_path / "runs")
    return tmp_path / "runs"


def version(runs: Path) -> int:
    with sqlite3.connect(runs / LOG_FILE) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources():
    return {path.relative_to(FEATX).as_posix(): path.read_text() for path in FEATX.rglob("*.py")}


def test_only_the_log_store_runs_sql():
    sql = re.compile(
        r"\bsqlite3\b|read_sql|\b(?:SELECT .* FROM|INSERT (?:OR IGNORE )?INTO|DELETE FROM|CREATE TABLE|"
        r"ALTER TABLE|PRAGMA \w+|BEGIN IMMEDIATE)\b"
    )
    users = sorted(name for name, text in _sources().items() if sql.search(text))
    assert users == ["runs/store.py"]
    text = _sources()["runs/store.py"]
    # transactions through one helper: BEGIN, COMMIT and ROLLBACK are written once, in it
    assert [len(re.findall(rf'"{word}', text)) for word in ("BEGIN", "COMMIT", "ROLLBACK")] == [1, 1, 1]
    helper = text[text.index("def _transaction(") :]
    helper = helper[: helper.index("\n\n\n")]
    assert all(f'"{word}' in helper for word in ("BEGIN", "COMMIT", "ROLLBACK"))


def test_only_the_models_module_loads_model_files():
    loads = re.compile(r"skops\.io\.load\b|\.load_keras_model\(|\bjoblib\.load\b|\bpickle\.loads?\(")
    users = sorted(name for name, text in _sources().items() if loads.search(text))
    assert users == ["runs/models.py"]
    # and the log store, the run folders and the runs table never import it
    for name in ("store", "folders", "listing"):
        assert not re.search(r"^\s*from featx\.runs\.models import", _sources()[f"runs/{name}.py"], re.M)


def test_a_real_format_3_log_is_listed_loaded_and_migrated_whole(tmp_path):
    from featx.runs.models import load_model
    from featx.selection.spec import Evaluation, fit_spec, logged_spec, spec_hash

    runs = v3_runs(tmp_path)
    ids = sorted(p.name for p in runs.iterdir() if p.is_dir())
    assert len(ids) == 15 and version(runs) == 3
    where = ["--cache-dir", tmp_path / "cache", "--runs-dir", runs]
    before = read_log(Cache(None, runs_dir=runs))
    rc, listed, err = cli("runs", *where, "--wide")
    assert rc == 0 and not err and all(run_id in listed for run_id in ids)
    assert version(runs) == 3  # reading writes nothing

    rc, out, err = cli("prune", "--keep-best", "100", *where)  # a command that writes the log: migrates it
    assert rc == 0 and "removed 0 run(s)" in out, err
    assert version(runs) == LOG_VERSION == 4
    after = read_log(Cache(None, runs_dir=runs))
    pd.testing.assert_frame_equal(after, before)  # read before its migration as it is stored after
    assert sorted(after["run_id"]) == ids
    assert cli("runs", *where, "--wide")[1] == listed
    with sqlite3.connect(runs / LOG_FILE) as db:
        stored = {r[0]: r[1:] for r in db.execute("SELECT run_id, spec, evaluation, spec_hash FROM runs")}
    assert {run_id for run_id, (_, _, h) in stored.items() if h} == V3_EXACT  # the others are NULL: never reused
    assert all(spec for spec, _, _ in stored.values())  # every old row's columns give its FitSpec back

    for row in after.to_dict("records"):
        pipeline, logged = load_model(row["run_id"], Cache(None, runs_dir=runs))
        assert logged["run_id"] == row["run_id"] and hasattr(pipeline, "predict")
        spec = json.loads(row["spec"])
        assert (spec["classifier"], spec["seed"]) == (row["classifier"], row["seed"])
        if row["run_id"] in V3_EXACT:
            fitted, evaluation = logged_spec(row)
            assert (fitted.params_json(), fitted.transforms_label()) == (row["params"], row["transforms"])
            assert evaluation.protocol == row["cv"] and row["spec_hash"] == spec_hash(fitted, evaluation)
    # the hash a migrated run got is the one the same fit made today gets: reuse finds it
    rf = after.set_index("run_id").loc["20261202-122107-8a83ce"]
    today = fit_spec("rf", params={"n_estimators": 3, "min_samples_leaf": 10}, pca=10)
    assert rf["spec_hash"] == spec_hash(today, Evaluation(cv=3))


def test_a_failed_migration_leaves_the_old_log_as_it_was(tmp_path):
    runs = v3_runs(tmp_path)
    with sqlite3.connect(runs / LOG_FILE) as db:  # something that makes the last step of the migration fail
        db.execute("CREATE TABLE runs_spec_hash (x)")
    before, digest = read_log(Cache(None, runs_dir=runs)), sha256(runs / LOG_FILE)
    rc, out, err = cli("prune", "--keep-best", "0", "--cache-dir", tmp_path / "cache", "--runs-dir", runs)
    assert_one_line_error(rc, err, r"runs log .*runs.sqlite is damaged or not a featx runs database")
    assert sha256(runs / LOG_FILE) == digest and version(runs) == 3
    pd.testing.assert_frame_equal(read_log(Cache(None, runs_dir=runs)), before)
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == sorted(before["run_id"])  # nothing removed


def test_every_run_of_a_real_format_3_log_predicts_after_its_migration(elpv_cache, tmp_path):
    """The runs of tests/data/runs-v3 were fitted on this fixture's entry (the same key), so predict rebuilds its
    backbone; each migrated run's model predicts new images as it predicts their cached features."""
    from featx import Cache, load
    from featx.experiments.predict import predict
    from featx.runs.models import load_model
    from featx.runs.store import finish_removals, logged_selection
    from featx.sources import resolve_source

    runs = v3_runs(tmp_path)
    entry = Cache(elpv_cache).open(V3_ENTRY)  # a changed cache key fails here: remake tests/data/runs-v3
    finish_removals(Cache(None, runs_dir=runs))  # migrates
    assert version(runs) == LOG_VERSION
    table = read_log(Cache(None, runs_dir=runs))
    assert set(table["cache_entry"]) == {V3_ENTRY} and set(table["cache_key"]) == {entry.key}
    test = [i for i, part in enumerate(entry.split) if part == "test"][:3]
    root = resolve_source("elpv").root  # the images the fixture extracted
    images = [str(Path(root) / entry.relpaths[i]) for i in test]
    for row in table.to_dict("records"):
        pipeline, _ = load_model(row["run_id"], Cache(None, runs_dir=runs))
        X, _, _ = load(entry, logged_selection(row))
        predicted = predict(
            row["run_id"],
            images,
            output=tmp_path / "p.csv",
            cache=Cache(elpv_cache, runs_dir=runs),
            log=lambda *a: None,
        )
        names = [entry.class_names[c] for c in pipeline.predict(X[test])]
        assert list(predicted["label"]) == names, row["run_id"]


def test_a_fit_logs_its_spec_and_evaluation_whole_with_their_hash(elpv_cache, tmp_path):
    import featx
    from featx.selection.spec import Evaluation, FitSpec, fit_spec, logged_spec, spec_hash

    runs = tmp_path / "runs"
    spec = fit_spec("logreg", params={"C": 0.5}, class_weight="balanced", standardize=True, n_jobs=1, seed=2)
    evaluation = Evaluation(cv=3, seed=2)
    first = fit(V3_ENTRY, "block4c_add", spec, evaluation, cache=Cache(elpv_cache, runs_dir=runs), log=None)
    featx.fit(V3_ENTRY, "block3b_add", featx.fit_spec("knn"), cache=featx.Cache(elpv_cache, runs_dir=runs), log=None)
    with sqlite3.connect(runs / LOG_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LOG_VERSION
        stored = db.execute(
            "SELECT spec, evaluation, spec_hash, classifier, params, transforms, views, tta, seed "
            "FROM runs ORDER BY seq"
        ).fetchall()
    text, evaluation_text, digest, *readable = stored[0]
    assert json.loads(text) == spec.to_dict() and json.loads(evaluation_text) == evaluation.to_dict()
    assert digest == spec_hash(spec, evaluation) == first.row["spec_hash"]
    assert readable == [spec.classifier, spec.params_json(), spec.transforms_label(), spec.views_label(), 0, 2]
    knn_spec, knn_evaluation = logged_spec(read_log(Cache(None, runs_dir=runs)).iloc[1])
    assert knn_spec == FitSpec(classifier="knn") and knn_evaluation == Evaluation() and stored[1][2]

    # the spec read back from the log is the spec: fitted again it gives the same scores and the same hash
    row = read_log(Cache(None, runs_dir=runs)).iloc[0]
    again_spec, again_evaluation = logged_spec(row)
    assert (again_spec, again_evaluation) == (spec, evaluation)
    again = fit(V3_ENTRY, "block4c_add", again_spec, again_evaluation, cache=Cache(elpv_cache, runs_dir=runs), log=None)
    scores = [c for c in first.row if c.startswith(("val_", "test_", "cv_"))]
    assert {c: again.row[c] for c in scores} == {c: first.row[c] for c in scores}
    assert again.row["spec_hash"] == first.row["spec_hash"]


def test_the_log_and_the_runs_table_say_what_they_left_out_as_values(tmp_path):
    """read_runlog's RunLog and runs_table's RunsTable carry the warnings, the invalid ids and the order line as
    attributes of their own (never in DataFrame.attrs, which pandas operations drop); read_log is the table alone."""
    from featx.runs.listing import format_runs, runs_table
    from featx.runs.store import COLUMNS, append_run, read_runlog

    cache = tmp_path / "cache"
    for run_id in ("20261202-090000-abc123", "20261202-090001-def456", "20261202-090002-0aa0aa"):
        row = {"run_id": run_id, "model_path": "", "model_sha256": "", "classifier": "knn", "layers": "x"}
        append_run(cache, {c: None for c in COLUMNS} | row | {"val_accuracy": 0.5, "layer_names": "x"})
    with sqlite3.connect(cache / "runs" / LOG_FILE) as db:
        db.execute("UPDATE runs SET run_id = 'hand-edited' WHERE run_id = '20261202-090002-0aa0aa'")
    logged = read_runlog(cache)
    assert list(logged.table["run_id"]) == ["20261202-090000-abc123", "20261202-090001-def456"]
    assert logged.invalid_ids == ["hand-edited"] and len(logged.warnings) == 1
    assert "1 row(s) whose run_id is not a featx run id ('hand-edited')" in logged.warnings[0]
    pd.testing.assert_frame_equal(read_log(cache), logged.table)
    listed = runs_table(cache, sort="val_accuracy")
    assert listed.warnings == logged.warnings and listed.order == "ordered by val_accuracy"
    assert len(listed.table) == 2 and format_runs(listed).splitlines()[-1] == listed.order
