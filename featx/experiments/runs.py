"""The experiment log and saved models, kept next to the cache they were fitted on (or in a --runs-dir):

    <runs>/runs.sqlite          one row per fit (COLUMNS), SQLite in WAL mode, format version in user_version;
                                its table `selection_scores` holds SELECTION_COLUMNS (balanced accuracy, CV
                                means and CIs) of the runs that have them, keyed by run_id
    <runs>/<run_id>/            model.skops (+ head.keras for the dense head), metrics.json,
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
transaction as its row. Models are never unpickled: pipelines load through skops with an explicit list of
the types featx itself produces, the dense head's Keras model in Keras safe mode; the sha256 in the log
guards against accidental changes, the loaders against malicious ones.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
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
from featx.cache.pick import data_labels
from featx.cache.lock import process_alive
from featx.cache.store import Cache
from featx.classifiers.views import final_classifier, with_final_classifier
from featx.errors import FeatxError, RunFailed

COLUMNS = (
    "run_id", "timestamp", "cache_key", "cache_entry", "backbone", "layers", "layer_names", "n_features",
    "classifier", "params", "all_params", "transforms", "views", "tta", "seed", "n_train",
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
REALS = tuple(c for c in COLUMNS if c.startswith(("val_", "test_")) or c.endswith("_seconds"))
DISPLAY = ("run_id", "backbone", "data", "layers", "n_features", "classifier", "params", "transforms", "views", "selected_by",
           "selection_score", "val_accuracy", "val_f1_macro", "test_accuracy", "test_f1_macro", "fit_seconds")
LOG_FILE, OLD_LOG_FILE = "runs.sqlite", "runs.csv"
LOG_VERSION = 2  # PRAGMA user_version of runs.sqlite; 0 = a new, empty database; 1 = before views (migrated)
MODEL_FILE, HEAD_FILE = "model.skops", "head.keras"
BUSY_TIMEOUT_S = 120  # how long a fit waits for other fits' transactions before giving up
STAGING = ".staging-"  # .staging-<run_id>-<pid>@<host>: removed once that process is gone
_HOST = re.sub(r"[^\w.-]", "_", socket.gethostname())


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
    """Sortable by time, unique across concurrent processes."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


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


@contextmanager
def _database(folder: Path, write: bool):
    """A connection to the log in `folder`, created (and an old runs.csv migrated) on first write.

    Damage, an unknown format version or a read-only folder end in one line naming the file and the fix.
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
        yield connection
    except sqlite3.Error as exc:
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
        if version <= LOG_VERSION:  # a log written before the table existed gains it (a no-op after)
            connection.execute(_SELECTION_SCHEMA)
        return
    with _immediate(connection):
        if not connection.execute("PRAGMA user_version").fetchone()[0]:
            if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise sqlite3.DatabaseError("it holds tables but no featx format version")
            connection.execute(_SCHEMA)
            connection.execute(_SELECTION_SCHEMA)
            old = folder / OLD_LOG_FILE
            if old.exists():  # a row logged twice (or without id) in the CSV is kept once
                _insert(connection, _read_old_csv(old).dropna(subset=["run_id"]).drop_duplicates("run_id", keep="last"))
            connection.execute(f"PRAGMA user_version={LOG_VERSION}")


def _migrate(connection: sqlite3.Connection) -> None:
    """Version 1 -> 2 in one transaction: the views columns, holding what its runs were (plain fits)."""
    with _immediate(connection):
        if connection.execute("PRAGMA user_version").fetchone()[0] == 1:  # not migrated meanwhile by another fit
            for column, plain in VIEW_COLUMNS.items():
                kind = "INTEGER" if column in INTEGERS else "TEXT"
                connection.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
                connection.execute(f"UPDATE runs SET {column} = ?", (plain,))
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
    """A table read from a log without the views columns (format 1, or runs.csv): its runs were plain fits."""
    return table.assign(**{column: plain for column, plain in VIEW_COLUMNS.items() if column not in table.columns})


def _check_version(connection: sqlite3.Connection, path: Path) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, 1, LOG_VERSION):  # 1 is read as it is, and migrated by the next write
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


def _log_error(path: Path, exc: sqlite3.Error) -> FeatxError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return RunFailed(f"runs log {path} stayed locked by other fits for {BUSY_TIMEOUT_S}s; run again")
    if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
        return FeatxError(f"cannot open runs log {path} ({text}); pass --runs-dir (API: runs_dir=) naming a "
                          "writable folder, or make this one writable")
    return FeatxError(f"runs log {path} is damaged or not a featx runs database ({text}); move it away "
                      "(featx then starts a new log) or restore it from a backup")


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
    folder = prepare_log(cache)
    remove_debris(folder)
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


def remove_debris(folder: Path) -> None:
    """Delete the staging folders of fits killed on this host (their pid is gone); never another host's."""
    for staging in folder.glob(f"{STAGING}*@{_HOST}"):
        pid = staging.name.rpartition("@")[0].rpartition("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def append_run(cache, row: dict, *, staged: StagedRun | None = None) -> None:
    """Add one row (keys: COLUMNS, and any of SELECTION_COLUMNS) to the runs log of `cache` (a Cache or cache folder); with `staged`, publish
    its folder in the same transaction."""
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
    """Remove runs (log rows and folders) in one transaction: all of them or, on any failure, none.

    Folders are renamed to staging names inside the transaction (and back if it fails), then deleted; a
    deletion killed after the commit leaves only staging debris, which the next fit removes.
    """
    folder = writable_folder(_cache(cache_dir, runs_dir).runs_dir, "runs")
    moved = []
    with _database(folder, write=True) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            for run_id in run_ids:
                connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                if (folder / run_id).is_dir():
                    trash = folder / f"{STAGING}rm-{run_id}-{os.getpid()}@{_HOST}"
                    os.rename(folder / run_id, trash)
                    moved.append((folder / run_id, trash))
            connection.execute("COMMIT")
        except BaseException:
            for original, trash in reversed(moved):
                os.rename(trash, original)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    for _, trash in moved:
        shutil.rmtree(trash, ignore_errors=True)


# --- reading runs

def read_log(cache_dir=None, *, runs_dir=None) -> pd.DataFrame:
    """Every logged run, in the order they were logged (empty frame with COLUMNS if none), with its
    SELECTION_COLUMNS (NaN where a run has none).

    cache_dir : a Cache or a cache folder (None: the default one); runs_dir : the log's folder, if not its runs/.
    An old runs.csv is migrated into runs.sqlite by the first fit; until then it is read as it is.
    """
    folder = _cache(cache_dir, runs_dir).runs_dir
    if (folder / LOG_FILE).exists():
        with _database(folder, write=False) as connection:
            if connection.execute("PRAGMA user_version").fetchone()[0]:  # 0: created, not yet initialized
                present = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}  # version 1: no views
                table = pd.read_sql_query(f"SELECT {', '.join(c for c in COLUMNS if c in present)} FROM runs ORDER BY seq",
                                          connection).pipe(_with_view_columns)[list(COLUMNS)]
                table = table.merge(_selection_scores(connection), on="run_id", how="left")
                return table.astype({c: float for c in (*REALS, *SELECTION_REALS)})  # NULLs would read as objects
    old = folder / OLD_LOG_FILE
    table = _read_old_csv(old).astype({"run_id": str}) if old.exists() else pd.DataFrame(columns=list(COLUMNS))
    return table.reindex(columns=[*COLUMNS, *SELECTION_COLUMNS]).astype({c: float for c in SELECTION_REALS})


def _selection_scores(connection: sqlite3.Connection) -> pd.DataFrame:
    """The selection_scores table; empty in a log that no featx with CV has written to yet."""
    if not connection.execute("SELECT 1 FROM sqlite_master WHERE name='selection_scores'").fetchone():
        return pd.DataFrame(columns=["run_id", *SELECTION_COLUMNS])
    table = pd.read_sql_query(f"SELECT run_id, {', '.join(SELECTION_COLUMNS)} FROM selection_scores", connection)
    text = ["cv", "cv_folds"]  # NULL reads as None, a run without a row here as NaN: one missing value, NaN
    return table.astype({c: float for c in SELECTION_REALS}).assign(**{c: table[c].astype(object).where(
        table[c].notna(), float("nan")) for c in text})


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
    """
    if metric not in SELECTION_METRICS:
        raise FeatxError(f"unknown metric '{metric}'; choose one of {', '.join(SELECTION_METRICS)}")
    table = read_log(cache_dir, runs_dir=runs_dir)
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
    table = table.sort_values(by, ascending=by.endswith("_seconds"), kind="stable", na_position="last")
    labels = data_labels(_cache(cache_dir, runs_dir))  # a combined run's key joins its entries' keys with "+"
    table = table.assign(data=table["cache_key"].map(
        lambda key: " + ".join(labels.get(part, "(entry not in this cache)") for part in str(key).split("+"))))
    table = table.head(top).reset_index(drop=True) if top else table.reset_index(drop=True)
    table.attrs["order"] = _order_note(table, sort, metric)
    return table


def _order_note(table: pd.DataFrame, sort: str | None, metric: str) -> str:
    if sort is None:
        n_cv = int((table["selected_by"] != "val").sum())
        return (f"best first by {metric}: the CV mean for the {n_cv} run(s) that have one, else val "
                "(selection score; never test)")
    note = f"ordered by {sort}"
    return note + (": a test score, for reporting; choose models by their selection score (the default order)"
                   if sort.startswith("test_") else "")


def format_runs(table: pd.DataFrame) -> str:
    """The DISPLAY columns as a text table (long layer lists cut), for the CLI and pipeline summaries, with the
    line saying how the table is ordered."""
    if table.empty:
        return "no runs yet; run `featx fit` or `featx compare`"
    layers = table["layers"].where(table["layers"].str.len() <= 40, table["layers"].str.slice(0, 37) + "...")
    views = table["views"].astype(str) + pd.to_numeric(table["tta"]).map({1: " +tta"}).fillna("")
    columns = [c for c in DISPLAY if c in table.columns and (c != "views" or (views != "id").any())]  # plain: no column
    shown = table[columns].assign(layers=layers, views=views)[columns].to_string(index=False)
    return shown + (f"\n{table.attrs['order']}" if "order" in table.attrs else "")


def find_run(run_id: str, cache_dir=None, *, runs_dir=None) -> pd.Series:
    """The log row of a run, by full id or unique prefix."""
    table = read_log(cache_dir, runs_dir=runs_dir)
    matches = table[table["run_id"].str.startswith(str(run_id))]
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
    return [*own, "featx.classifiers.dense.DenseHeadClassifier", "featx.classifiers.views.ViewEnsemble",
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
        try:
            head.load_keras_model(path.with_name(HEAD_FILE))
        except (OSError, ValueError, TypeError) as exc:  # safe mode refuses code (Lambda layers, custom objects)
            raise FeatxError(f"Keras head {path.with_name(HEAD_FILE)} of run {run_id} does not load in Keras safe mode "
                             f"({str(exc).splitlines()[0][:200]}); refusing it: fit the model again") from None
    return pipeline


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)
