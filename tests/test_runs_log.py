"""The runs log (SQLite) and run folders under real conditions: concurrent fit processes, a damaged or foreign
log file, a full disk during a fit, a read-only cache. Every `featx` here is a real process forked from
tests/forkserver.py (real file-size limits, root without its permission override), on a small real cache
(ELPV images through MobileNetV2 at 96 px, random weights: the numbers do not matter, the files do).
"""

from __future__ import annotations

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
