"""The runs log (SQLite) and run folders under real conditions: concurrent fit processes, a damaged or foreign
log file, a full disk during a fit, a read-only cache. Every `featx` here is a real process forked from
tests/forkserver.py (real file-size limits, root without its permission override), on a small real cache
(ELPV images through MobileNetV2 at 96 px, random weights: the numbers do not matter, the files do).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
from pathlib import Path

import pandas as pd
import pytest

import forkserver
from featx.errors import FeatxError
from featx.experiments.runs import LOG_FILE, LOG_VERSION, export_csv, find_run, read_log, runs

forkserver.server()  # its TensorFlow import runs in the background meanwhile

FIT = ["fit", "--layers", "out_relu", "--clf", "logreg", "--n-jobs", "1"]


def featx(*args, **kwargs) -> forkserver.Child:
    return forkserver.server().run([str(a) for a in args], **kwargs)


def user_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ log lines."""
    return [line for line in stderr.splitlines()
            if line.strip() and not re.match(r"[IWEF]\d{4} |WARNING: All log messages before absl", line)]


def assert_one_line_error(child: forkserver.Child, pattern: str, code: int = 2) -> str:
    lines = user_lines(child.err)
    assert child.rc == code and len(lines) == 1 and "Traceback" not in child.err, child.err
    assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("runs_log") / "cache"
    done = featx("extract", "--data", "elpv", "--backbone", "mobilenet_v2", "--weights", "none", "--input-size", 96,
                 "--limit", 48, "--layers", "out_relu", "--cache-dir", cache, "--quiet")
    assert done.rc == 0, done.err
    return cache


@pytest.fixture
def cache(small_cache, tmp_path) -> Path:
    """A private copy of the small cache (tests damage their log or make it read-only)."""
    copy = tmp_path / "cache"
    shutil.copytree(small_cache, copy)
    return copy


def run_folders(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "runs").iterdir() if p.is_dir())


@pytest.mark.slow
def test_concurrent_fits_keep_every_row(cache):
    children = [forkserver.server().start([*FIT, "--cache-dir", str(cache), "--seed", str(i)]) for i in range(6)]
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
    full = featx("fit", "--layers", "out_relu", "--clf", "rf", "--n-estimators", 300, "--cache-dir", cache, fsize=40_000)
    assert_one_line_error(full, r"writing run \S+ in .*runs failed \(File too large\); nothing was logged", code=1)
    assert run_folders(cache) == list(before["run_id"])  # no half run, no staging folder
    pd.testing.assert_frame_equal(read_log(cache), before)
    assert (cache / "runs" / LOG_FILE).read_bytes() == log_bytes


@pytest.mark.slow
def test_damaged_or_foreign_log_is_one_line_and_never_appended_to(cache, tmp_path):
    assert featx(*FIT, "--cache-dir", cache).rc == 0
    run_id = read_log(cache)["run_id"][0]
    log = cache / "runs" / LOG_FILE
    for content in (b"run_id,timestamp\n\"unterminated,\n", os.urandom(8192), log.read_bytes()[:3000]):
        log.write_bytes(content)
        for stale in log.parent.glob(f"{LOG_FILE}-*"):  # a WAL beside a replaced file would be replayed into it
            stale.unlink()
        for args in (("runs",), ("predict", "--model", run_id, tmp_path), FIT):
            child = featx(*args, "--cache-dir", cache)
            assert_one_line_error(child, rf"runs log .*{LOG_FILE} is damaged or not a featx runs database .*move it away")
        assert log.read_bytes() == content  # fit did not write into it
        assert run_folders(cache) == [run_id]


def test_unknown_log_version_or_foreign_database_is_refused(tmp_path):
    from featx.experiments.runs import prepare_log

    folder = tmp_path / "runs"
    folder.mkdir()
    with sqlite3.connect(folder / LOG_FILE) as db:
        db.execute("CREATE TABLE runs (x)")
        db.execute(f"PRAGMA user_version={LOG_VERSION + 1}")
    for check in (read_log, prepare_log):
        with pytest.raises(FeatxError, match=rf"format version {LOG_VERSION + 1}, this featx reads version {LOG_VERSION}"):
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
    assert log["val_accuracy"][0] == pytest.approx(first["val_accuracy"][0])
    exported = featx("runs", "--cache-dir", cache, "--csv", tmp_path / "all.csv")
    assert exported.rc == 0 and "saved" in exported.out
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "all.csv", dtype={"run_id": str}), log, check_dtype=False)
    assert export_csv(tmp_path / "api.csv", cache).read_bytes() == (tmp_path / "all.csv").read_bytes()
    with pytest.raises(FeatxError, match="model.joblib.*no longer loads.*fit it again"):
        from featx.experiments.runs import load_model

        load_model("20250101", cache)
    assert find_run("20250101", cache)["model_path"].endswith(".joblib")


@pytest.mark.parametrize("text", ['run_id,model_path,model_sha256\n"20250101,m,0\n',  # unterminated quote
                                  "run_id,model_path,model_sha256\n1,m,0\n2,m,0,extra\n",  # wrong field count
                                  ""])
def test_malformed_old_csv_log_is_one_line(cache, text):
    (cache / "runs").mkdir()
    (cache / "runs" / "runs.csv").write_text(text)
    message = r"cannot migrate the old runs log .*runs.csv .*repair or move the CSV away"
    with pytest.raises(FeatxError, match=message):
        runs(cache)
    assert_one_line_error(featx(*FIT, "--cache-dir", cache), message)
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

        for args in (FIT, ("compare", "--layer-sets", "out_relu", "--clf", "knn"), ("plot-tsne", "--layers", "out_relu")):
            assert_one_line_error(run(*args), r"cannot write (runs|reports) in .*cache/(runs|reports) \(.*\); pass --runs-dir")
        assert_one_line_error(run("predict", "--model", run_id, image), r"cannot write predictions in .*; pass --output")
        listed = run("runs")
        assert listed.rc == 0 and run_id[-6:] in listed.out, listed.err  # its short id
        predicted = run("predict", "--model", run_id, image, "--output", tmp_path / "p.csv")
        assert predicted.rc == 0 and pd.read_csv(tmp_path / "p.csv")["label"].notna().all(), predicted.err
        assert run(*FIT, "--runs-dir", mine).rc == 0
        assert run("compare", "--layer-sets", "out_relu", "--clf", "knn", "--runs-dir", mine).rc == 0
        assert run("plot-tsne", "--layers", "out_relu", "--runs-dir", mine).rc == 0
    finally:
        _writable(cache)
    assert len(read_log(cache)) == 1 and len(read_log(runs_dir=mine)) == 4  # fit, compare's knn and its 2 baselines
    assert len(list((mine / "reports").glob("compare-*/results.csv"))) == 1 and list((mine / "reports").glob("tsne-*.png"))


def _first_cached_image(cache: Path, target: Path) -> None:
    from featx import open_entry

    entry = open_entry(cache_dir=cache)
    shutil.copy(Path(entry.attrs["root"]) / entry.relpaths[0], target)


@pytest.mark.slow
def test_fit_killed_while_writing_its_run_leaves_nothing_logged_and_its_debris_goes(cache):
    import socket
    import time

    assert featx(*FIT, "--cache-dir", cache).rc == 0
    before = read_log(cache)
    child = forkserver.server().start(["fit", "--layers", "out_relu", "--clf", "rf", "--n-estimators", "300",
                                       "--cache-dir", str(cache)])
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
