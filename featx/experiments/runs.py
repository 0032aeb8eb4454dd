"""The experiment log and saved models, kept next to the cache they were fitted on (or in a --runs-dir):

    <runs>/runs.sqlite          one row per fit (COLUMNS), SQLite in WAL mode, format version in user_version;
                                its table `selection_scores` holds SELECTION_COLUMNS (balanced accuracy, CV
                                means and CIs) of the runs that have them, keyed by run_id; its table
                                `removing` the run ids whose rows are deleted and whose folders are not yet
    <runs>/<run_id>/            model.skops (+ head.keras for the dense head, and for the tail: its whole Keras
                                model, tail layers + head), metrics.json,
                                confusion_{val,test}.csv/.png, history.csv
    <runs>/.staging-<run_id>-<pid>@<host>/   a run being written; renamed to <run_id>/ in the transaction
                                that logs it (removed by a later fit if its process was killed)
    <reports>/                  compare tables and charts, t-SNE plots

<runs> and <reports> are the Cache's `runs_dir` and `reports_dir`: <cache_dir>/runs and <cache_dir>/reports,
unless `runs_dir` names another folder (then <reports> is <runs_dir>/reports): a read-only cache can still be
experimented on. The log's `layers` and `layer_names` columns hold a LayerSelection (`selection_columns`,
`logged_selection`).

Every run is one SQLite transaction, and SQLite waits (busy timeout) for concurrent fits, so rows are
never lost or torn. A run folder appears under its final name only once it is complete, in the same
transaction as its row. Removing runs (rm, prune) deletes their rows and records them in `removing` in one
transaction, and only then deletes their folders: a kill at any point leaves every listed run with its folder,
and the next command that writes the log deletes the folders still pending. Run ids are read only in
new_run_id's format and every run folder is checked to be a folder right inside the runs folder, so a log
received from someone else cannot make featx delete or write anywhere else. Models are never unpickled:
pipelines load through skops with an explicit list of the types featx itself produces, the dense head's Keras
model in Keras safe mode; the sha256 in the log guards against accidental changes, the loaders against
malicious ones.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from featx.backbones.layers import LayerSelection
from featx.cache.atomic import atomic_path, fsync_dir, fsync_file
from featx.cache.pick import data_labels, key_data_label
from featx.cache.lock import process_alive
from featx.cache.store import Cache
from featx.classifiers.views import final_classifier, with_final_classifier
from featx.errors import FeatxError, RunFailed

COLUMNS = (
    "run_id", "timestamp", "cache_key", "cache_entry", "split_fingerprint", "backbone", "layers", "layer_names",
    "n_features", "classifier", "params", "all_params", "transforms", "views", "tta", "seed", "n_train",
    "val_accuracy", "val_f1_weighted", "val_f1_macro", "test_accuracy", "test_f1_weighted", "test_f1_macro",
    "fit_seconds", "predict_seconds", "model_path", "model_sha256",
)
SELECTION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")
# In a table of their own (added beside `runs` without a format bump: a featx that predates it reads the log as
# before); `cv` is the folds' label ("cv5x2") and `cv_folds` their fingerprint, equal for paired runs.
SELECTION_COLUMNS = ("val_balanced_accuracy", "test_balanced_accuracy", "cv", "cv_folds",
                     *(f"cv_{m}_{s}" for m in SELECTION_METRICS for s in ("mean", "ci95")))
SELECTION_REALS = tuple(c for c in SELECTION_COLUMNS if c not in ("cv", "cv_folds"))
INTEGERS = ("n_features", "tta", "seed", "n_train")
# version 2 added views (the augmented views trained on, a comma list) and tta (0/1); older rows were plain fits
VIEW_COLUMNS = {"views": "id", "tta": 0}
# version 3 added split_fingerprint (split_fingerprint(): which images were train/val/test); NULL in older rows,
# whose split is unknown, and the table `removing`
REALS = tuple(c for c in COLUMNS if c.startswith(("val_", "test_")) or c.endswith("_seconds"))
DISPLAY = ("run_id", "backbone", "data", "split", "layers", "n_features", "classifier", "params", "transforms", "views",
           "selected_by", "selection_score", "val_accuracy", "val_f1_macro", "test_accuracy", "test_f1_macro",
           "fit_seconds")
LOG_FILE, OLD_LOG_FILE = "runs.sqlite", "runs.csv"
LOG_VERSION = 3  # PRAGMA user_version of runs.sqlite; 0 = a new, empty database; 1, 2: older (migrated on write)
MODEL_FILE, HEAD_FILE = "model.skops", "head.keras"
BUSY_TIMEOUT_S = 120  # how long a fit waits for other fits' transactions before giving up
STAGING = ".staging-"  # .staging-<run_id>-<pid>@<host>: removed once that process is gone
_HOST = re.sub(r"[^\w.-]", "_", socket.gethostname())
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # new_run_id's format: the only run ids featx reads or acts on
UNKNOWN_SPLIT = "unknown"  # how runs logged before split fingerprints existed are grouped
KILL_AT = "FEATX_TEST_KILL_AT"  # test hook: SIGKILL this process at that step (1, 2, ...) of removing runs


def _cache(cache_dir=None, runs_dir=None) -> Cache:
    """cache_dir as a Cache (it may be one already), with the user's runs_dir if given."""
    cache = cache_dir if isinstance(cache_dir, Cache) else Cache(cache_dir)
    return cache.with_runs_dir(runs_dir)


def selection_columns(selection: LayerSelection) -> dict:
    """A run's layers as the log stores them: `layers` the spec as written, `layer_names` the names in depth order."""
    return {"layers": selection.spec, "layer_names": ",".join(selection.names)}


def logged_selection(row) -> LayerSelection:
    """The LayerSelection a logged run was fitted on (the reader of `selection_columns`)."""
    return LayerSelection(str(row["layers"]), tuple(str(row["layer_names"]).split(",")))


def new_run_id() -> str:
    """Sortable by time, unique across concurrent processes; matches RUN_ID."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def valid_run_id(run_id) -> bool:
    """Whether `run_id` has new_run_id's format (no path separators, no '..': safe as a folder name)."""
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


def run_folder(runs_folder: Path, run_id: str) -> Path:
    """<runs_folder>/<run_id>, checked before anything renames, deletes or writes there: the id has RUN_ID's
    format, and the path (if it exists) is a real folder right inside runs_folder, not a link elsewhere."""
    if not valid_run_id(run_id):
        raise FeatxError(f"run id {str(run_id)[:80]!r} is not a featx run id (YYYYMMDD-HHMMSS-xxxxxx); refusing to "
                         "act on it: the runs log was edited or not written by featx")
    path = runs_folder / run_id
    if path.is_symlink() or (path.exists() and (not path.is_dir() or path.resolve().parent != runs_folder.resolve())):
        raise FeatxError(f"run folder {path} is not a folder inside {runs_folder} (a link or a file); refusing to "
                         "act on it: remove it by hand")
    return path


def split_fingerprint(entry) -> str:
    """Which images an entry's runs are fitted and scored on: 16 hex digits of a sha256 over every row's image
    content fingerprint and split name, in row order. Runs with different fingerprints were scored on
    different test rows and are never ranked together. entry : a CacheEntry, or a list of them (combined
    entries hold the same images and split; the first one's is used)."""
    entry = entry[0] if isinstance(entry, (list, tuple)) else entry
    digest = hashlib.sha256()
    for fingerprint, part in zip(entry.data["fingerprints"], entry.split):
        digest.update(f"{fingerprint}\t{part}\n".encode())
    return digest.hexdigest()[:16]


def _kill_point() -> None:
    """Test hook on the real code path of removing runs: with $FEATX_TEST_KILL_AT=k, SIGKILL at the k-th step."""
    at = os.environ.get(KILL_AT)
    if at:
        _steps[0] += 1
        if _steps[0] == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


_steps = [0]


def writable_folder(folder: Path, what: str,
                    fix: str = "pass --runs-dir (API: runs_dir=) naming a writable folder, or make this one writable") -> Path:
    """Create `folder` if needed and check it accepts files; else one line naming the `fix`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _probe(folder)
    except OSError as exc:
        raise FeatxError(f"cannot write {what} in {folder} ({_reason(exc)}); {fix}") from None
    return folder


def _probe(folder: Path) -> None:
    """Create and remove a file: the only test that also holds for root without its permission override."""
    probe = folder / f".probe-{os.getpid()}-{secrets.token_hex(3)}"
    probe.touch()
    probe.unlink()


# --- the log database

_SCHEMA = "CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, " + ", ".join(
    f"{c} {'INTEGER' if c in INTEGERS else 'REAL' if c in REALS else 'TEXT'}{' UNIQUE NOT NULL' if c == 'run_id' else ''}"
    for c in COLUMNS) + ")"
_SELECTION_SCHEMA = "CREATE TABLE IF NOT EXISTS selection_scores (run_id TEXT PRIMARY KEY, " + ", ".join(
    f"{c} {'TEXT' if c in ('cv', 'cv_folds') else 'REAL'}" for c in SELECTION_COLUMNS) + ")"
_REMOVING_SCHEMA = "CREATE TABLE IF NOT EXISTS removing (run_id TEXT PRIMARY KEY)"


@contextmanager
def _database(folder: Path, write: bool):
    """A connection to the log in `folder`, created (and an old runs.csv or an older format migrated) on first
    write; a writer first finishes what killed processes left (_tidy).

    Damage, an unknown format version, a read-only folder or a full disk end in one line naming the file and the fix.
    """
    path = folder / LOG_FILE
    try:
        connection = _connect(path, write)
    except sqlite3.Error as exc:
        raise _log_error(path, exc) from None
    try:
        if write:
            _check_integrity(connection)
            _create(connection, folder)
        _check_version(connection, path)
        if write:
            _tidy(connection, folder)
        yield connection
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise _log_error(path, exc) from None
    finally:
        connection.close()


def _connect(path: Path, write: bool) -> sqlite3.Connection:
    if write:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        if connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise sqlite3.OperationalError("cannot switch the log to WAL mode")
        return connection
    uri = path.resolve().as_uri()
    connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:  # WAL needs to create -shm beside the file: a read-only folder cannot
        connection.close()
        try:
            _probe(path.parent)
        except OSError:  # nothing can write there, so reading the file as immutable is exact
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        raise
    return connection


def _check_integrity(connection: sqlite3.Connection) -> None:
    problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(problems[0])


def _create(connection: sqlite3.Connection, folder: Path) -> None:
    """Schema, version and any old runs.csv rows in one transaction: concurrent first fits create it once."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version:
        if version < LOG_VERSION:
            _migrate(connection)
        return
    with _immediate(connection):
        if not connection.execute("PRAGMA user_version").fetchone()[0]:
            if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise sqlite3.DatabaseError("it holds tables but no featx format version")
            connection.execute(_SCHEMA)
            connection.execute(_SELECTION_SCHEMA)
            connection.execute(_REMOVING_SCHEMA)
            old = folder / OLD_LOG_FILE
            if old.exists():  # a row logged twice (or without id) in the CSV is kept once
                _insert(connection, _read_old_csv(old).dropna(subset=["run_id"]).drop_duplicates("run_id", keep="last"))
            connection.execute(f"PRAGMA user_version={LOG_VERSION}")


def _migrate(connection: sqlite3.Connection) -> None:
    """An older format to LOG_VERSION in one transaction (a concurrent fit may have done it meanwhile): 1 -> 2 the
    views columns, holding what its runs were (plain fits); 2 -> 3 split_fingerprint, NULL (not recorded), and
    the table `removing`. The table selection_scores, added without a version bump, is created if missing."""
    with _immediate(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == 1:
            for column, plain in VIEW_COLUMNS.items():
                kind = "INTEGER" if column in INTEGERS else "TEXT"
                connection.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
                connection.execute(f"UPDATE runs SET {column} = ?", (plain,))
        if version in (1, 2):
            connection.execute("ALTER TABLE runs ADD COLUMN split_fingerprint TEXT")
            connection.execute(_SELECTION_SCHEMA)
            connection.execute(_REMOVING_SCHEMA)
            connection.execute(f"PRAGMA user_version={LOG_VERSION}")


@contextmanager
def _immediate(connection: sqlite3.Connection):
    """One write transaction, taken at once (concurrent first fits queue here), committed or rolled back whole."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _read_old_csv(path: Path) -> pd.DataFrame:
    """The rows of a pre-SQLite runs.csv (migrated into runs.sqlite; the CSV is left as it was)."""
    try:
        table = pd.read_csv(path, dtype={"run_id": str, "cache_key": str, "model_sha256": str},
                            keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise FeatxError(f"cannot migrate the old runs log {path} to {LOG_FILE} ({str(exc).splitlines()[0]}); "
                         "repair or move the CSV away, then run again") from None
    missing = [c for c in ("run_id", "model_path", "model_sha256") if c not in table.columns]
    if missing:
        raise FeatxError(f"cannot migrate the old runs log {path}: no column {', '.join(missing)}; "
                         "repair or move the CSV away, then run again")
    return _with_view_columns(table).reindex(columns=list(COLUMNS))


def _with_view_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A table read from a log without the views columns (format 1, or runs.csv): its runs were plain fits; and
    without split_fingerprint (before format 3): their split is unknown (NaN)."""
    table = table.assign(**{column: plain for column, plain in VIEW_COLUMNS.items() if column not in table.columns})
    return table if "split_fingerprint" in table.columns else table.assign(split_fingerprint=float("nan"))


def _check_version(connection: sqlite3.Connection, path: Path) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, 1, 2, LOG_VERSION):  # 1 and 2 are read as they are, and migrated by the next write
        raise FeatxError(f"runs log {path} has format version {version}, this featx reads version {LOG_VERSION}; "
                         "use the featx that wrote it, or pass another --runs-dir")


def _insert(connection: sqlite3.Connection, table: pd.DataFrame) -> None:
    rows = [tuple(None if pd.isna(v) else v.item() if hasattr(v, "item") else v for v in row)
            for row in table[list(COLUMNS)].itertuples(index=False)]
    connection.executemany(f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
    extra = table.reindex(columns=["run_id", *SELECTION_COLUMNS])
    extra = extra[extra[list(SELECTION_COLUMNS)].notna().any(axis=1)]
    if len(extra):
        connection.executemany(f"INSERT INTO selection_scores (run_id, {', '.join(SELECTION_COLUMNS)}) VALUES "
                               f"({', '.join('?' * (len(SELECTION_COLUMNS) + 1))})",
                               [tuple(None if pd.isna(v) else v.item() if hasattr(v, "item") else v for v in row)
                                for row in extra.itertuples(index=False)])


def _log_error(path: Path, exc: Exception) -> FeatxError:
    if isinstance(exc, pd.errors.DatabaseError) and isinstance(exc.__cause__, sqlite3.Error):
        exc = exc.__cause__  # pandas' wrapper around the query's sqlite3 error
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    full = _disk_full(path.parent, exc)
    if full:
        return RunFailed(f"runs log {path} could not be written: disk full ({full}); the log is intact, with every "
                         "run logged before: free disk space (or raise the file size limit, `ulimit -f`) and run again")
    if "locked" in text or "busy" in text:
        return RunFailed(f"runs log {path} stayed locked by other fits for {BUSY_TIMEOUT_S}s; run again")
    if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
        return FeatxError(f"cannot open runs log {path} ({text}); pass --runs-dir (API: runs_dir=) naming a "
                          "writable folder, or make this one writable")
    return FeatxError(f"runs log {path} is damaged or not a featx runs database ({text}); move it away "
                      "(featx then starts a new log) or restore it from a backup")


_SQLITE_FULL, _SQLITE_IOERR = 13, 10  # result codes (the low byte of an extended code)
_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _disk_full(folder: Path, exc: Exception) -> str | None:
    """Why the log could not be written if the disk is full (or the file size limit is reached), else None.

    SQLite says SQLITE_FULL on ENOSPC but only "disk I/O error" on EFBIG (ulimit -f) or a failed mmap of its
    -shm file, and "database or disk is full" text where Python lacks error codes: those are checked by
    writing a small probe file beside the log.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if code is not None and code & 0xFF == _SQLITE_FULL or "disk is full" in text:
        return "database or disk is full"
    if (code is not None and code & 0xFF == _SQLITE_IOERR) or "disk I/O error" in text:
        probe = folder / f".probe-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * (1 << 16))
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            if err.errno in _FULL_ERRNOS:
                return _reason(err)
        finally:
            probe.unlink(missing_ok=True)
    return None


# --- writing runs

@dataclass
class StagedRun:
    run_id: str
    folder: Path  # temporary: <runs>/.staging-<run_id>-<pid>@<host>/, renamed to <runs>/<run_id>/ by append_run
    final: Path


def prepare_log(cache=None) -> Path:
    """Check, before a long fit, that its run can be recorded: the folder is writable and the log sound.

    cache : a Cache, or a cache folder. Returns its runs folder.
    """
    folder = writable_folder(_cache(cache).runs_dir, "runs")
    with _database(folder, write=True):
        pass
    return folder


@contextmanager
def stage_run(cache=None):
    """Yield a StagedRun in cache's runs folder, which the caller fills, then logs with append_run(..., staged=...).

    If the block fails, or ends without logging the run, the folder is removed: no half run is ever left.
    A write error (disk full, file size limit, permissions) becomes one line.
    """
    folder = prepare_log(cache)  # which also removes dead fits' staging folders
    run_id = new_run_id()
    staged = StagedRun(run_id, folder / f"{STAGING}{run_id}-{os.getpid()}@{_HOST}", folder / run_id)
    try:
        staged.folder.mkdir()
        yield staged
    except OSError as exc:
        raise RunFailed(f"writing run {run_id} in {folder} failed ({_reason(exc)}); nothing was logged: "
                        "free disk space (or fix permissions, or pass --runs-dir) and fit again") from None
    finally:
        shutil.rmtree(staged.folder, ignore_errors=True)


def remove_debris(folder: Path, connection: sqlite3.Connection | None = None) -> None:
    """Delete the staging folders of processes killed on this host (their pid is gone); never another host's.

    With the log's `connection`: a run folder that an older featx's rm or prune renamed to .staging-rm-<run_id>-...
    and was killed before its row was deleted (the row is still logged) is renamed back, not deleted.
    """
    for staging in folder.glob(f"{STAGING}*@{_HOST}"):
        pid = staging.name.rpartition("@")[0].rpartition("-")[2]
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        run_id = staging.name[len(f"{STAGING}rm-"):].rpartition("@")[0].rpartition("-")[0]
        if (connection is not None and staging.name.startswith(f"{STAGING}rm-") and valid_run_id(run_id)
                and not (folder / run_id).exists()
                and connection.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()):
            os.rename(staging, folder / run_id)
        else:
            shutil.rmtree(staging, ignore_errors=True)


def _tidy(connection: sqlite3.Connection, folder: Path) -> None:
    """What killed processes left, finished by the next writer: the folders of removed runs still pending in
    `removing` are deleted, and dead processes' staging folders (remove_debris)."""
    for (run_id,) in connection.execute("SELECT run_id FROM removing").fetchall():
        try:
            if valid_run_id(run_id):
                _discard(folder, run_id)
        except (FeatxError, OSError):
            continue  # not a folder featx may delete, or not deletable now: left for the user / a later command
        connection.execute("DELETE FROM removing WHERE run_id = ?", (run_id,))
    try:
        remove_debris(folder, connection)
    except OSError:
        pass  # a later writer tries again


def _discard(folder: Path, run_id: str) -> None:
    """Delete the folder of a removed run (if any): renamed to a staging name first, so a half-deleted folder is
    never left under the run's name."""
    path = run_folder(folder, run_id)
    trash = folder / f"{STAGING}rm-{run_id}-{os.getpid()}@{_HOST}"
    if trash.exists():  # left by a dead process that had this pid
        shutil.rmtree(trash)
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return  # no folder (compare's rows without a model have one; a run removed meanwhile has not)
    _kill_point()
    shutil.rmtree(trash, ignore_errors=True)  # what stays is a dead process's debris, removed by remove_debris
    _kill_point()


def finish_removals(cache_dir=None, *, runs_dir=None) -> None:
    """Delete what killed rm/prune/fit processes left in the runs folder (as every write to the log does), where
    there is a log and the folder is writable; else nothing."""
    folder = _cache(cache_dir, runs_dir).runs_dir
    if (folder / LOG_FILE).is_file() and os.access(folder, os.W_OK):
        with _database(folder, write=True):
            pass


def append_run(cache, row: dict, *, staged: StagedRun | None = None) -> None:
    """Add one row (keys: COLUMNS, and any of SELECTION_COLUMNS) to the runs log of `cache` (a Cache or cache folder); with `staged`, publish
    its folder in the same transaction. The run id must have new_run_id's format."""
    if not valid_run_id(row.get("run_id")):
        raise FeatxError(f"run id {str(row.get('run_id'))[:80]!r} is not a featx run id (YYYYMMDD-HHMMSS-xxxxxx, "
                         "as new_run_id makes); nothing was logged")
    folder = writable_folder(_cache(cache).runs_dir, "runs")
    if staged is not None:  # on disk before it is published
        for path in staged.folder.iterdir():
            fsync_file(path)
        fsync_dir(staged.folder)
    with _database(folder, write=True) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            _insert(connection, pd.DataFrame([row], columns=[*COLUMNS, *SELECTION_COLUMNS]))
            if staged is not None:
                os.rename(staged.folder, staged.final)
            connection.execute("COMMIT")
        except BaseException:
            if staged is not None and staged.final.exists() and not staged.folder.exists():
                os.rename(staged.final, staged.folder)  # the row is rolled back: so is the folder
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    if staged is not None:
        fsync_dir(folder)


def delete_runs(run_ids: list[str], cache_dir=None, *, runs_dir=None) -> None:
    """Remove runs: their rows are deleted, and their ids recorded in the table `removing`, in one transaction,
    then their folders are deleted. Every id and folder is checked (run_folder) before anything changes.

    A failure or kill before the commit removes nothing; after it, the runs are gone from the log and the next
    command that writes the log (fit, compare, tune, rm, prune) deletes the folders left: a listed run always
    has its folder, and a removed one never comes back.
    """
    folder = writable_folder(_cache(cache_dir, runs_dir).runs_dir, "runs")
    for run_id in run_ids:
        run_folder(folder, run_id)
    with _database(folder, write=True) as connection:
        with _immediate(connection):
            for run_id in run_ids:
                connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                connection.execute("DELETE FROM selection_scores WHERE run_id = ?", (run_id,))
                connection.execute("INSERT OR IGNORE INTO removing (run_id) VALUES (?)", (run_id,))
            _kill_point()
        _kill_point()
        for run_id in run_ids:
            try:
                _discard(folder, run_id)
            except OSError as exc:
                raise RunFailed(f"{len(run_ids)} run(s) are removed from the log, but deleting the folder of run "
                                f"{run_id} failed ({_reason(exc)}); the next fit, rm or prune deletes it") from None
            connection.execute("DELETE FROM removing WHERE run_id = ?", (run_id,))


# --- reading runs

def read_log(cache_dir=None, *, runs_dir=None) -> pd.DataFrame:
    """Every logged run, in the order they were logged (empty frame with COLUMNS if none), with its
    SELECTION_COLUMNS (NaN where a run has none).

    cache_dir : a Cache or a cache folder (None: the default one); runs_dir : the log's folder, if not its runs/.
    An old runs.csv is migrated into runs.sqlite by the first fit; until then it is read as it is.
    Rows whose run_id is not in new_run_id's format are left out (never listed, loaded or removed); they, and a
    zero-byte log, are described in attrs["warnings"] (lines for the user), their ids in attrs["invalid_ids"].
    A non-number in a numeric column is an error naming the file, column and run.
    """
    folder = _cache(cache_dir, runs_dir).runs_dir
    path, warnings = folder / LOG_FILE, []
    table = None
    if path.exists():
        if path.stat().st_size == 0:
            warnings.append(f"runs log {path} is an empty file (0 bytes), so no runs are listed; if it held runs it "
                            "was truncated: restore it from a backup (the next fit starts a new log in it)")
        with _database(folder, write=False) as connection:
            if connection.execute("PRAGMA user_version").fetchone()[0]:  # 0: created, not yet initialized
                present = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}  # older formats lack some
                if "run_id" not in present:
                    raise sqlite3.DatabaseError("it has no table runs")
                table = pd.read_sql_query(f"SELECT {', '.join(c for c in COLUMNS if c in present)} FROM runs ORDER BY seq",
                                          connection).pipe(_with_view_columns)[list(COLUMNS)]
                table = table.merge(_selection_scores(connection), on="run_id", how="left")
    if table is None:
        old = folder / OLD_LOG_FILE
        path = old if old.exists() and not (path.exists() and path.stat().st_size) else path
        table = _read_old_csv(old).astype({"run_id": str}) if old.exists() else pd.DataFrame(columns=list(COLUMNS))
        table = table.reindex(columns=[*COLUMNS, *SELECTION_COLUMNS])
    return _checked(table, path, warnings)


def _checked(table: pd.DataFrame, path: Path, warnings: list[str]) -> pd.DataFrame:
    """The log's rows with numbers as numbers (REALS as float: NULLs would read as objects) and only valid run ids."""
    for column in (*REALS, *SELECTION_REALS, *INTEGERS):
        values = pd.to_numeric(table[column].where(table[column].notna()), errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            raise FeatxError(f"runs log {path} has a non-number ({str(table.loc[bad, column].iloc[0])[:40]!r}) in its "
                             f"numeric column {column} (run {str(table.loc[bad, 'run_id'].iloc[0])[:40]!r}); repair "
                             "that value (e.g. with sqlite3) or restore the log from a backup")
        if column not in INTEGERS:
            table[column] = values.astype(float)
    valid = table["run_id"].map(valid_run_id).astype(bool)
    invalid = [str(r) for r in table.loc[~valid, "run_id"]]
    if invalid:
        shown = ", ".join(repr(r[:40]) for r in invalid[:3]) + (", ..." if len(invalid) > 3 else "")
        warnings.append(f"runs log {path} has {len(invalid)} row(s) whose run_id is not a featx run id ({shown}); "
                        "they are ignored (never listed, loaded or removed): the log was edited or not written "
                        "by featx")
        table = table[valid].reset_index(drop=True)
    table.attrs.update(warnings=warnings, invalid_ids=invalid)
    return table


def _selection_scores(connection: sqlite3.Connection) -> pd.DataFrame:
    """The selection_scores table; empty in a log that no featx with CV has written to yet."""
    if not connection.execute("SELECT 1 FROM sqlite_master WHERE name='selection_scores'").fetchone():
        return pd.DataFrame(columns=["run_id", *SELECTION_COLUMNS])
    table = pd.read_sql_query(f"SELECT run_id, {', '.join(SELECTION_COLUMNS)} FROM selection_scores", connection)
    text = ["cv", "cv_folds"]  # NULL reads as None, a run without a row here as NaN: one missing value, NaN
    return table.assign(**{c: table[c].astype(object).where(table[c].notna(), float("nan")) for c in text})


def export_csv(path, cache_dir=None, *, runs_dir=None) -> Path:
    """Write the whole log, in logged order, as a CSV file (atomically); returns its path."""
    path = Path(path)
    table = read_log(cache_dir, runs_dir=runs_dir)
    try:
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    except OSError as exc:
        raise FeatxError(f"cannot write {path} ({_reason(exc)}); choose a writable path for --csv") from None
    return path


def runs(cache_dir=None, *, sort: str | None = None, metric: str = "accuracy", clf=None, backbone=None, layers=None,
         top=None, runs_dir=None) -> pd.DataFrame:
    """The runs table, best first by the selection score, never by test; attrs["order"] says how it was ordered.

    The selection score (columns `selection_score`, `selected_by`) is a run's CV mean of `metric` where it has
    one, else its val score: what a model may be chosen by. sort : order by this column instead (descending;
    ascending for *_seconds columns: fastest first). clf, backbone : keep rows with exactly this classifier /
    backbone (a comma list allows several). layers : keep rows whose layer spec or layer names contain this
    substring. top : keep the first N.
    Runs made on different splits (column `split`: split_fingerprint's first 8 digits, "unknown" for runs logged
    before featx recorded it) were scored on different rows and are never ranked together: the table is ranked
    within each split, the split of the most recent run first. attrs["warnings"]: read_log's.
    """
    if metric not in SELECTION_METRICS:
        raise FeatxError(f"unknown metric '{metric}'; choose one of {', '.join(SELECTION_METRICS)}")
    table = read_log(cache_dir, runs_dir=runs_dir)
    warnings = table.attrs["warnings"]
    cv = table[f"cv_{metric}_mean"]
    table["selected_by"] = table["cv"].where(cv.notna(), "val")
    table["selection_score"] = cv.where(cv.notna(), table[f"val_{metric}"]).astype(float)
    if sort is not None and sort not in table.columns:
        raise FeatxError(f"cannot sort runs by '{sort}'; choose one of {', '.join(table.columns)}")
    for column, wanted in (("classifier", clf), ("backbone", backbone)):
        if wanted:
            table = table[table[column].isin([w.strip() for w in wanted.split(",")])]
    if layers:
        table = table[table["layers"].str.contains(layers, regex=False) | table["layer_names"].str.contains(layers, regex=False)]
    by = sort or "selection_score"
    table["split"] = split_labels(table)
    table = table.sort_values(by, ascending=by.endswith("_seconds"), kind="stable", na_position="last")
    table = table.sort_values("split", key=lambda split: split.map(recency(table["split"])), kind="stable")
    labels = data_labels(_cache(cache_dir, runs_dir))  # a combined run's key joins its entries' keys with "+"
    table = table.assign(data=table["cache_key"].map(lambda key: key_data_label(key, labels)))
    table = table.head(top).reset_index(drop=True) if top else table.reset_index(drop=True)
    table.attrs["order"] = _order_note(table, sort, metric)
    table.attrs["warnings"] = warnings
    return table


def split_labels(table: pd.DataFrame) -> pd.Series:
    """Each logged run's split as shown: its split_fingerprint's first 8 digits, UNKNOWN_SPLIT where not recorded."""
    return table["split_fingerprint"].map(lambda f: f[:8] if isinstance(f, str) and f else UNKNOWN_SPLIT)


def recency(split: pd.Series) -> dict:
    """{split: rank}, 0 for the split of the most recently logged run (the log's last row) and so on."""
    ranks: dict = {}
    for label in reversed(split.sort_index().tolist()):
        ranks.setdefault(label, len(ranks))
    return ranks


def splits_note(table: pd.DataFrame) -> str | None:
    """One line when the runs of `table` were made on more than one split, else None."""
    n = table["split"].nunique() if "split" in table.columns else 0
    if n < 2:
        return None
    return (f"these runs were made on {n} different splits (column split; 'unknown': logged before featx recorded "
            "it), so each split's runs are ranked on their own, the most recent split first: scores on different "
            "test rows are not comparable")


def _order_note(table: pd.DataFrame, sort: str | None, metric: str) -> str:
    splits = splits_note(table)
    if sort is None:
        n_cv = int((table["selected_by"] != "val").sum())
        note = (f"best first by {metric}: the CV mean for the {n_cv} run(s) that have one, else val "
                "(selection score; never test)")
    else:
        note = f"ordered by {sort}" + (": a test score, for reporting; choose models by their selection score (the "
                                       "default order)" if sort.startswith("test_") else "")
    return note + (f"\n{splits}" if splits else "")


def format_runs(table: pd.DataFrame) -> str:
    """The DISPLAY columns as a text table (long layer lists cut), for the CLI and pipeline summaries, with the
    line saying how the table is ordered."""
    if table.empty:
        return "no runs yet; run `featx fit` or `featx compare`"
    layers = table["layers"].where(table["layers"].str.len() <= 40, table["layers"].str.slice(0, 37) + "...")
    views = table["views"].astype(str) + pd.to_numeric(table["tta"]).map({1: " +tta"}).fillna("")
    hidden = {"views": (views == "id").all(), "split": "split" in table.columns and table["split"].nunique() < 2}
    columns = [c for c in DISPLAY if c in table.columns and not hidden.get(c)]  # plain, one split: no column
    shown = table[columns].assign(layers=layers, views=views)[columns].to_string(index=False)
    return shown + (f"\n{table.attrs['order']}" if "order" in table.attrs else "")


def id_matches(run_ids: pd.Series, target) -> pd.Series:
    """Which of `run_ids` a user's `target` names: the whole id, a prefix, or the short id tables show (a suffix)."""
    target = str(target)
    return run_ids.str.startswith(target) | run_ids.str.endswith(target)


def find_run(run_id: str, cache_dir=None, *, runs_dir=None) -> pd.Series:
    """The log row of a run, by full id, unique prefix or unique suffix (the short id tables show)."""
    table = read_log(cache_dir, runs_dir=runs_dir)
    matches = table[id_matches(table["run_id"], run_id)]
    if matches.empty and any(bad.startswith(str(run_id)) for bad in table.attrs["invalid_ids"]):
        where = _cache(cache_dir, runs_dir).runs_dir / LOG_FILE
        raise FeatxError(f"run {str(run_id)[:80]!r} has an invalid run id in {where} (featx writes "
                         "YYYYMMDD-HHMMSS-xxxxxx); it is not acted on: the log was edited or not written by featx")
    if len(matches) != 1:
        where = _cache(cache_dir, runs_dir).runs_dir / LOG_FILE
        problem = "is ambiguous" if len(matches) else f"is not in {where}"
        raise FeatxError(f"run '{run_id}' {problem}; see `featx runs` for run ids (and pass the right --cache-dir "
                         "or --runs-dir)")
    return matches.iloc[0]


# --- models

def trusted_types() -> list[str]:
    """Every type featx puts in a saved pipeline beyond skops' defaults (scikit-learn estimators, numpy):
    featx's own transformers and head, and the fitted internals of the registry's classifiers."""
    from featx.features.transforms import FNEDiscretizer, QuietKBinsDiscretizer

    own = [f"{t.__module__}.{t.__qualname__}" for t in (FNEDiscretizer, QuietKBinsDiscretizer)]
    metrics = [f"sklearn.metrics._dist_metrics.{m}Distance{bits}"
               for m in ("Euclidean", "SEuclidean", "Manhattan", "Chebyshev", "Minkowski", "Cosine") for bits in (32, 64)]
    return [*own, "featx.classifiers.dense.DenseHeadClassifier", "featx.classifiers.tail.TailClassifier",
            "featx.classifiers.views.ViewEnsemble",
            "featx.classifiers.kernel.NystroemSVC", "sklearn.tree._tree.Tree",
            "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree", *metrics]


def save_model(pipeline, path: Path) -> str:
    """Save the fitted Pipeline at `path` with skops (a Keras head's model beside it as head.keras), in a
    staged run folder (its rename publishes them); returns the sha256 of the model file(s) for the log."""
    import skops.io

    path = Path(path)
    head = final_classifier(pipeline)
    if hasattr(head, "save_keras_model"):  # the dense head: its Keras model goes to a .keras file
        head.save_keras_model(path.with_name(HEAD_FILE))
        fsync_file(path.with_name(HEAD_FILE))
        pipeline = with_final_classifier(pipeline, head.without_keras_model())  # the caller's keeps its head
    skops.io.dump(pipeline, path)
    fsync_file(path)
    return model_sha256(path)


def model_sha256(path: Path) -> str:
    """sha256 over the model file and, for the dense head, its head.keras (in that order)."""
    digest = hashlib.sha256()
    for part in (path, path.with_name(HEAD_FILE)):
        if part == path or part.exists():
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def load_model(run_id: str, cache_dir=None, *, runs_dir=None):
    """(fitted Pipeline, log row) of a run; refuses a file outside the runs folder, whose sha256 changed, in
    the old pickle format, or holding any type outside trusted_types() (nothing in it is executed)."""
    row = find_run(run_id, cache_dir, runs_dir=runs_dir)
    if not isinstance(row["model_path"], str) or not row["model_path"]:
        raise FeatxError(f"run {row['run_id']} has no saved model (compare keeps only its best row's model unless "
                         "--save-models all); fit it again with `featx fit` to get one")
    root = _cache(cache_dir, runs_dir).runs_dir.resolve()
    path = (root / str(row["model_path"])).resolve()
    if path.suffix == ".joblib":
        raise FeatxError(f"run {row['run_id']} saved its model as a pickle ({path.name}), which featx no longer loads "
                         "because unpickling can run code; fit it again (same layers, classifier and options) to get "
                         "a safe model file")
    if not path.is_relative_to(root) or not path.is_file():
        raise FeatxError(f"model of run {row['run_id']} ('{row['model_path']}') is not a file inside {root}; refusing to load it")
    if model_sha256(path) != row["model_sha256"]:
        raise FeatxError(f"model file {path} does not match the sha256 recorded for run {row['run_id']} (modified or "
                         "replaced); refusing to load it: fit the model again")
    return _load_pipeline(path, row["run_id"]), row


def _load_pipeline(path: Path, run_id: str):
    import skops.io

    refuse = f"model file {path} of run {run_id} is not a skops model featx wrote"
    try:
        pipeline = skops.io.load(path, trusted=trusted_types())
    except skops.io.exceptions.UntrustedTypesFoundException as exc:
        raise FeatxError(f"{refuse}: it holds types featx never saves ({str(exc)[:200]}); refusing to load it: "
                         "fit the model again") from None
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise FeatxError(f"{refuse} ({str(exc)[:200] or type(exc).__name__}); refusing to load it: fit the model again") from None
    head = final_classifier(pipeline)
    if hasattr(head, "load_keras_model"):
        keras_file = path.with_name(HEAD_FILE)
        if not keras_file.is_file():
            raise FeatxError(f"Keras head {keras_file} of run {run_id} is missing (the dense head's model is saved "
                             "beside model.skops); refusing the run: fit the model again")
        if not zipfile.is_zipfile(keras_file):
            raise FeatxError(f"Keras head {keras_file} of run {run_id} is corrupt: not a Keras file (a .keras file "
                             "is a zip archive); refusing it: fit the model again")
        try:
            head.load_keras_model(keras_file)
        except (OSError, ValueError, TypeError) as exc:  # safe mode refuses code (Lambda layers, custom objects)
            raise FeatxError(f"Keras head {keras_file} of run {run_id} does not load in Keras safe mode "
                             f"({str(exc).splitlines()[0][:200]}); refusing it: fit the model again") from None
    return pipeline


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)
