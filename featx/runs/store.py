"""The runs log: one SQLite file per runs folder, the only code in featx that writes or reads SQL.

    <runs>/runs.sqlite          one row per fit (COLUMNS), SQLite in WAL mode, format version in user_version;
                                each row holds the run's FitSpec and Evaluation whole (`spec`, `evaluation`:
                                to_dict() as JSON) and their `spec_hash`; its table `selection_scores` holds
                                SELECTION_COLUMNS (balanced accuracy, CV means and CIs) of the runs that have
                                them, keyed by run_id; its table `removing` the run ids whose rows are deleted
                                and whose folders are not yet

<runs> is the Cache's `runs_dir`: <cache_dir>/runs, unless `runs_dir` names another folder (a read-only cache can
still be experimented on). The log's `layers` and `layer_names` columns hold a LayerSelection
(`selection_columns`, `logged_selection`).

A row is made here only (run_row, from the entry, spec, evaluation and scores); fit, compare and tune log through
featx.experiments.fit.record_run, which saves the run folder and calls log_run.

Every run is one SQLite transaction (`_transaction`), and SQLite waits (busy timeout) for concurrent fits, so
rows are never lost or torn. A run folder (featx.runs.folders) appears under its final name only once
it is complete, in the same transaction as its row. Removing runs (rm, prune) deletes their rows and records
them in `removing` in one transaction, and only then deletes their folders: a kill at any point leaves every
listed run with its folder, and the next command that writes the log deletes the folders still pending.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from featx.backbones.layers import LayerSelection
from featx.cache import safepath
from featx.cache.atomic import fsync_dir
from featx.cache.layout import parse_staging, staging_name
from featx.cache.store import Cache
from featx.errors import FeatxError, RunFailed
from featx.runs.folders import (
    STAGING_RM,
    StagedRun,
    discard,
    kill_point,
    new_run_id,
    os_reason,
    probe,
    publish,
    remove_debris,
    rename_run,
    run_folder,
    staged_folder,
    sync_staged,
    unpublish,
    valid_run_id,
    writable_folder,
)
from featx.selection.spec import EVAL_SPLITS, METRIC_NAMES

COLUMNS = (
    "run_id",
    "timestamp",
    "cache_key",
    "cache_entry",
    "split_fingerprint",
    "backbone",
    "layers",
    "layer_names",
    "n_features",
    "classifier",
    "params",
    "all_params",
    "transforms",
    "views",
    "tta",
    "seed",
    "n_train",
    "val_accuracy",
    "val_f1_weighted",
    "val_f1_macro",
    "test_accuracy",
    "test_f1_weighted",
    "test_f1_macro",
    "fit_seconds",
    "predict_seconds",
    "model_path",
    "model_sha256",
    "spec",
    "evaluation",
    "spec_hash",
)
SELECTION_METRICS = METRIC_NAMES
# In a table of their own (added beside `runs` without a format bump: a featx that predates it reads the log as
# before); `cv` is the folds' label ("cv5x2") and `cv_folds` their fingerprint, equal for paired runs.
SELECTION_COLUMNS = (
    "val_balanced_accuracy",
    "test_balanced_accuracy",
    "cv",
    "cv_folds",
    *(f"cv_{m}_{s}" for m in SELECTION_METRICS for s in ("mean", "ci95")),
)
SELECTION_REALS = tuple(c for c in SELECTION_COLUMNS if c not in ("cv", "cv_folds"))
INTEGERS = ("n_features", "tta", "seed", "n_train")
# version 2 added views (the augmented views trained on, a comma list) and tta (0/1); older rows were plain fits
VIEW_COLUMNS = {"views": "id", "tta": 0}
# version 3 added split_fingerprint (split_fingerprint(): which images were train/val/test); NULL in older rows,
# whose split is unknown, and the table `removing`
# version 4 added spec and evaluation (FitSpec.to_dict() and Evaluation.to_dict() as JSON: the run whole, re-runnable
# with from_dict) and spec_hash (spec.spec_hash of both: what reuse matches; NULL where the row stands for no exact
# fit); older rows get them from their columns where those say it exactly (_old_spec), else NULL
SPEC_COLUMNS = ("spec", "evaluation", "spec_hash")
REALS = tuple(c for c in COLUMNS if c.startswith(("val_", "test_")) or c.endswith("_seconds"))
LOG_FILE, OLD_LOG_FILE = "runs.sqlite", "runs.csv"
SQLITE_FILES = ("-wal", "-shm", "-journal")  # what SQLite writes beside the log, by the log's name
LOG_VERSION = 4  # PRAGMA user_version of runs.sqlite; 0 = a new, empty database; 1-3: older (migrated on write)
BUSY_TIMEOUT_S = 120  # how long a fit waits for other fits' transactions before giving up


def selection_columns(selection: LayerSelection) -> dict:
    """A run's layers as the log stores them: `layers` the spec as written, `layer_names` the names in depth order."""
    return {"layers": selection.spec, "layer_names": ",".join(selection.names)}


def logged_selection(row) -> LayerSelection:
    """The LayerSelection a logged run was fitted on (the reader of `selection_columns`)."""
    return LayerSelection(str(row["layers"]), tuple(str(row["layer_names"]).split(",")))


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


# --- the row: what a run is, in the log's columns

_CV_LABEL = re.compile(r"cv(\d+)x(\d+)")  # Folds.label of K-fold folds; a partial label ends with "[n/N]"


def run_row(
    run_id: str,
    entry,
    spec,
    evaluation,
    scores,
    *,
    selection: LayerSelection,
    cv=None,
    model_path: str = "",
    model_sha256: str = "",
) -> dict:
    """The log row of a run (COLUMNS, and SELECTION_COLUMNS where it has them): the one place a row is made.

    entry : the CacheEntry fitted on, or a list of the entries whose features were combined (cache_key,
        cache_entry and backbone then join theirs with "+"); split_fingerprint is the first one's split now.
    spec, evaluation : the FitSpec and Evaluation (featx.selection.spec), stored whole as JSON with their
        spec_hash; the readable columns (classifier, params, transforms, views, tta, seed) are derived from spec.
    scores : featx.experiments.fit.Scores (fitted pipeline, metrics per split, n_train, n_features, seconds).
    selection : the LayerSelection the features came from (layers, layer_names).
    cv : the score the spec is selected by, a featx.selection.cv.CVResult or None: on K-fold folds the
        cv_* columns (mean and CI of every metric); on the one val split (folds labelled "val": tune's selection
        on val, whose refit has no val rows left) the val_* scores.
    model_path, model_sha256 : the saved model (relative to the runs folder) and its sha256; "" for none.
    spec_hash is NULL (reuse never matches the run) where the JSON does not give spec and evaluation back exactly
    (from_dict), or where cv covers only part of its folds (compare's halving stopped the row early).
    """
    from featx.classifiers.views import final_classifier
    from featx.selection.spec import METRIC_NAMES, spec_hash

    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    metrics = scores.metrics
    spec_text, evaluation_text = _json(spec.to_dict()), _json(evaluation.to_dict())
    selected = cv_columns(cv)
    exact = _gives_back(spec, evaluation, spec_text, evaluation_text) and "[" not in str(selected.get("cv", ""))
    return {
        "run_id": run_id,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cache_key": "+".join(e.key for e in entries),
        "cache_entry": "+".join(e.name for e in entries),
        "backbone": "+".join(e.settings["backbone"] for e in entries),
        "split_fingerprint": split_fingerprint(entries[0]),
        **selection_columns(selection),
        "n_features": scores.n_features,
        "classifier": spec.classifier,
        "params": spec.params_json(),
        "all_params": _json(final_classifier(scores.pipeline).get_params()),
        "transforms": spec.transforms_label(),
        "views": spec.views_label(),
        "tta": int(spec.tta),
        "seed": spec.seed,
        "n_train": scores.n_train,
        **{f"{s}_{m}": round(metrics[s][m], 4) if s in metrics else None for s in EVAL_SPLITS for m in METRIC_NAMES},
        **selected,
        "fit_seconds": round(scores.fit_seconds, 3),
        "predict_seconds": round(scores.predict_seconds, 3),
        "model_path": model_path,
        "model_sha256": model_sha256,
        "spec": spec_text,
        "evaluation": evaluation_text,
        "spec_hash": spec_hash(spec, evaluation) if exact else None,
    }


def log_run(
    staged: StagedRun,
    entry,
    spec,
    evaluation,
    scores,
    *,
    selection: LayerSelection,
    cv=None,
    model_path: str = "",
    model_sha256: str = "",
) -> dict:
    """Log a run whose folder is `staged` (stage_run): its row (run_row) and the folder published in one
    transaction, in the runs log of the first entry's cache. Returns the row."""
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    row = run_row(
        staged.run_id,
        entries,
        spec,
        evaluation,
        scores,
        selection=selection,
        cv=cv,
        model_path=model_path,
        model_sha256=model_sha256,
    )
    append_run(entries[0].cache, row, staged=staged)
    return row


def cv_columns(result) -> dict:
    """The log's columns of a selection result (a CVResult): the cv columns of K-fold folds, the val_* scores of
    the one val split (folds labelled "val"), none without one."""
    if result is None:
        return {}
    from featx.selection.cv import summarize
    from featx.selection.spec import METRIC_NAMES

    summary = summarize(result)
    if result.folds.label == "val":
        return {f"val_{m}": round(summary[f"{m}_mean"], 4) for m in METRIC_NAMES}
    return {
        "cv": result.folds.label,
        "cv_folds": result.folds.fingerprint()[:16],
        **{f"cv_{k}": round(v, 4) for k, v in summary.items()},
    }


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _gives_back(spec, evaluation, spec_text: str, evaluation_text: str) -> bool:
    """Whether the logged JSON makes the same FitSpec and Evaluation again (from_dict), so its hash may be matched."""
    from featx.selection.spec import Evaluation, FitSpec

    try:
        return (
            FitSpec.from_dict(json.loads(spec_text)) == spec
            and Evaluation.from_dict(json.loads(evaluation_text)) == evaluation
        )
    except (FeatxError, ValueError, TypeError):
        return False


_TRANSFORM_LABELS = (  # FitSpec.transforms_label() part -> the transform keywords that make it
    (re.compile(r"standardize"), lambda m: {"standardize": True}),
    (
        re.compile(r"fne\(([^,]+),([^)]+)\)"),
        lambda m: {"discretize": "fne", "fne_low": float(m[1]), "fne_high": float(m[2])},
    ),
    (re.compile(r"kbins\((\d+)\)"), lambda m: {"discretize": "kbins", "kbins": int(m[1])}),
    (re.compile(r"pca\(([^)]+)\)"), lambda m: {"pca": json.loads(m[1])}),
)


def _old_specs(table: pd.DataFrame) -> list[tuple]:
    """(spec, evaluation, spec_hash) of each row a featx before format 4 logged, from its columns (the
    SELECTION_COLUMNS joined), as JSON text like run_row's; None where the columns do not say it exactly:

    - spec: from classifier, params, transforms (the label, read back), views, tta and seed, kept only when the
      FitSpec made from them gives those same columns again (n_jobs, never logged, takes its default);
    - evaluation: known only for a run scored by K-fold CV that also has val scores of its own (a fit or a compare
      row: fit_on "train", folds from its cv label and its seed, as those made them; metric and search, which
      change no logged number, at their defaults). A run without CV could be a fit or the refit of a tune
      selected on val (fitted on train+val, its val_* the selection's), and one with CV but no val scores a tune
      refit or a fit on data without val rows: the old columns do not tell them apart;
    - spec_hash: where both are known, its split recorded (format 3) and its CV on all of its folds.
    """
    from featx.selection.spec import Evaluation, FitSpec, spec_hash

    made: dict = {}
    out = []
    for row in table.to_dict("records"):
        try:
            key = tuple(str(row[c]) for c in ("classifier", "params", "transforms", "views", "tta", "seed"))
            if key not in made:
                made[key] = _old_spec(row, FitSpec)
            spec = made[key]
            evaluation = _old_evaluation(row, Evaluation) if spec is not None else None
        except (FeatxError, ValueError, TypeError, KeyError, AttributeError):
            spec = evaluation = None
        exact = (
            spec is not None
            and evaluation is not None
            and isinstance(row.get("split_fingerprint"), str)
            and bool(row["split_fingerprint"])
        )
        out.append(
            (
                None if spec is None else _json(spec.to_dict()),
                None if evaluation is None else _json(evaluation.to_dict()),
                spec_hash(spec, evaluation) if exact else None,
            )
        )
    return out


def _old_spec(row: dict, FitSpec):
    transforms = {}
    label = str(row["transforms"])
    for part in [] if label == "none" else label.split("+"):
        made = next((make(m) for pattern, make in _TRANSFORM_LABELS if (m := pattern.fullmatch(part))), None)
        if made is None:
            return None
        transforms.update(made)
    views = str(row["views"]).split(",")
    seed, tta = int(row["seed"]), bool(int(row["tta"]))
    data = {
        "classifier": str(row["classifier"]),
        "params": json.loads(row["params"] or "{}"),
        "transforms": transforms,
        "seed": seed,
        **({"views": views, "tta": tta} if views != ["id"] or tta else {}),
    }
    spec = FitSpec.from_dict(data)
    same = (
        spec.params_json() == row["params"]
        and spec.transforms_label() == label
        and spec.views_label() == row["views"]
        and int(spec.tta) == int(row["tta"])
        and spec.seed == seed
    )
    return spec if same else None


def _old_evaluation(row: dict, Evaluation):
    label = row.get("cv")
    match = _CV_LABEL.fullmatch(label) if isinstance(label, str) else None
    if match is None or pd.isna(row.get("val_accuracy")):
        return None
    return Evaluation(cv=int(match[1]), cv_repeats=int(match[2]), seed=int(row["seed"]), fit_on="train")


# --- the log database

_SCHEMA = (
    "CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    + ", ".join(
        f"{c} {'INTEGER' if c in INTEGERS else 'REAL' if c in REALS else 'TEXT'}{' UNIQUE NOT NULL' if c == 'run_id' else ''}"
        for c in COLUMNS
    )
    + ")"
)
_SELECTION_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS selection_scores (run_id TEXT PRIMARY KEY, "
    + ", ".join(f"{c} {'TEXT' if c in ('cv', 'cv_folds') else 'REAL'}" for c in SELECTION_COLUMNS)
    + ")"
)
_REMOVING_SCHEMA = "CREATE TABLE IF NOT EXISTS removing (run_id TEXT PRIMARY KEY)"
_HASH_INDEX = "CREATE INDEX runs_spec_hash ON runs (spec_hash)"


@contextmanager
def _database(folder: Path, write: bool):
    """A connection to the log in `folder`, created (and an old runs.csv or an older format migrated) on first
    write; a writer first finishes what killed processes left (_tidy).

    Damage, an unknown format version, a read-only folder or a full disk end in one line naming the file and the fix.
    """
    path = folder / LOG_FILE
    for name in (LOG_FILE, *(LOG_FILE + suffix for suffix in SQLITE_FILES)):  # SQLite follows links: featx does not
        safepath.check_own_file(folder, folder / name)
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
            probe(path.parent)
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
    with _transaction(connection):
        if not connection.execute("PRAGMA user_version").fetchone()[0]:
            if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise sqlite3.DatabaseError("it holds tables but no featx format version")
            connection.execute(_SCHEMA)
            connection.execute(_SELECTION_SCHEMA)
            connection.execute(_REMOVING_SCHEMA)
            connection.execute(_HASH_INDEX)
            old = folder / OLD_LOG_FILE
            if old.exists():  # a row logged twice (or without id) in the CSV is kept once
                _insert(connection, _read_old_csv(old).dropna(subset=["run_id"]).drop_duplicates("run_id", keep="last"))
                _fill_specs(connection)
            connection.execute(f"PRAGMA user_version={LOG_VERSION}")


def _migrate(connection: sqlite3.Connection) -> None:
    """An older format to LOG_VERSION in one transaction (a concurrent fit may have done it meanwhile; a failure
    leaves the file as it was): 1 -> 2 the views columns, holding what its runs were (plain fits); 2 -> 3
    split_fingerprint, NULL (not recorded), and the table `removing`; 3 -> 4 spec, evaluation and spec_hash, from
    each row's columns where they say them exactly (_old_spec), else NULL. The table selection_scores, added
    without a version bump, is created if missing."""
    with _transaction(connection):
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
        if version in (1, 2, 3):
            present = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
            for column in (c for c in SPEC_COLUMNS if c not in present):
                connection.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
            _fill_specs(connection)
            connection.execute(_HASH_INDEX)
            connection.execute(f"PRAGMA user_version={LOG_VERSION}")


def _fill_specs(connection: sqlite3.Connection) -> None:
    """spec, evaluation and spec_hash of the rows an older featx logged (their spec NULL), from their columns."""
    table = pd.read_sql_query("SELECT * FROM runs WHERE spec IS NULL ORDER BY seq", connection)
    table = table.merge(_selection_scores(connection), on="run_id", how="left")
    for seq, values in zip(table["seq"], _old_specs(table)):
        connection.execute("UPDATE runs SET spec = ?, evaluation = ?, spec_hash = ? WHERE seq = ?", (*values, int(seq)))


@contextmanager
def _transaction(connection: sqlite3.Connection):
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
        table = pd.read_csv(
            path, dtype={"run_id": str, "cache_key": str, "model_sha256": str}, keep_default_na=False, na_values=[""]
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise FeatxError(
            f"cannot migrate the old runs log {path} to {LOG_FILE} ({str(exc).splitlines()[0]}); "
            "repair or move the CSV away, then run again"
        ) from None
    missing = [c for c in ("run_id", "model_path", "model_sha256") if c not in table.columns]
    if missing:
        raise FeatxError(
            f"cannot migrate the old runs log {path}: no column {', '.join(missing)}; "
            "repair or move the CSV away, then run again"
        )
    return _with_view_columns(table).reindex(columns=list(COLUMNS))


def _with_view_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A table read from a log without the views columns (format 1, or runs.csv): its runs were plain fits; and
    without split_fingerprint (before format 3): their split is unknown (NaN)."""
    table = table.assign(**{column: plain for column, plain in VIEW_COLUMNS.items() if column not in table.columns})
    return table if "split_fingerprint" in table.columns else table.assign(split_fingerprint=float("nan"))


def _with_spec_columns(table: pd.DataFrame, old: bool) -> pd.DataFrame:
    """`table` (SELECTION_COLUMNS joined) with spec, evaluation and spec_hash: for a log `old`er than format 4 as
    its migration will store them (_old_specs); NULLs as NaN, as in every other text column."""
    if old:
        values = list(zip(*_old_specs(table))) or [(), (), ()]
        table = table.assign(
            **{column: pd.Series(v, index=table.index, dtype=object) for column, v in zip(SPEC_COLUMNS, values)}
        )
    return table.assign(**{c: table[c].astype(object).where(table[c].notna(), float("nan")) for c in SPEC_COLUMNS})


def _check_version(connection: sqlite3.Connection, path: Path) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, 1, 2, 3, LOG_VERSION):  # 1-3 are read as they will be migrated, by the next write
        raise FeatxError(
            f"runs log {path} has format version {version}, this featx reads version {LOG_VERSION}; "
            "use the featx that wrote it, or pass another --runs-dir"
        )


def _insert(connection: sqlite3.Connection, table: pd.DataFrame) -> None:
    rows = [
        tuple(None if pd.isna(v) else v.item() if hasattr(v, "item") else v for v in row)
        for row in table[list(COLUMNS)].itertuples(index=False)
    ]
    connection.executemany(f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
    extra = table.reindex(columns=["run_id", *SELECTION_COLUMNS])
    extra = extra[extra[list(SELECTION_COLUMNS)].notna().any(axis=1)]
    if len(extra):
        connection.executemany(
            f"INSERT INTO selection_scores (run_id, {', '.join(SELECTION_COLUMNS)}) VALUES "
            f"({', '.join('?' * (len(SELECTION_COLUMNS) + 1))})",
            [
                tuple(None if pd.isna(v) else v.item() if hasattr(v, "item") else v for v in row)
                for row in extra.itertuples(index=False)
            ],
        )


def _log_error(path: Path, exc: Exception) -> FeatxError:
    if isinstance(exc, pd.errors.DatabaseError) and isinstance(exc.__cause__, sqlite3.Error):
        exc = exc.__cause__  # pandas' wrapper around the query's sqlite3 error
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    full = _disk_full(path.parent, exc)
    if full:
        return RunFailed(
            f"runs log {path} could not be written: disk full ({full}); the log is intact, with every "
            "run logged before: free disk space (or raise the file size limit, `ulimit -f`) and run again"
        )
    if "locked" in text or "busy" in text:
        return RunFailed(f"runs log {path} stayed locked by other fits for {BUSY_TIMEOUT_S}s; run again")
    if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
        return FeatxError(
            f"cannot open runs log {path} ({text}); pass --runs-dir (API: runs_dir=) naming a "
            "writable folder, or make this one writable"
        )
    return FeatxError(
        f"runs log {path} is damaged or not a featx runs database ({text}); move it away "
        "(featx then starts a new log) or restore it from a backup"
    )


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
                return os_reason(err)
        finally:
            probe.unlink(missing_ok=True)
    return None


# --- writing runs


def prepare_log(cache=None) -> Path:
    """Check, before a long fit, that its run can be recorded: the folder is writable and the log sound.

    cache : a Cache, or a cache folder. Returns its runs folder.
    """
    folder = writable_folder(Cache.resolve(cache).runs_dir, "runs")
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
    with staged_folder(folder, new_run_id()) as staged:
        yield staged


def _tidy(connection: sqlite3.Connection, folder: Path) -> None:
    """What killed processes left, finished by the next writer: the folders of removed runs still pending in
    `removing` are deleted, and dead processes' staging folders (remove_debris)."""
    for (run_id,) in connection.execute("SELECT run_id FROM removing").fetchall():
        try:
            if valid_run_id(run_id):
                discard(folder, run_id)
        except (FeatxError, OSError):
            continue  # not a folder featx may delete, or not deletable now: left for the user / a later command
        connection.execute("DELETE FROM removing WHERE run_id = ?", (run_id,))
    try:
        remove_debris(folder, lambda run_id: _logged(connection, run_id))
    except OSError:
        pass  # a later writer tries again


def _logged(connection: sqlite3.Connection, run_id: str) -> bool:
    return connection.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None


def orphan_runs(cache=None) -> list[Path]:
    """Run folders (named by a featx run id, right inside the runs folder) that no row of the runs log lists: what a
    fit killed between publishing its folder and committing its row leaves. Where the folder is writable they are
    looked for while holding the log's write lock, so a fit publishing its run at that instant is waited for, never
    counted; nothing is written. [] without a runs.sqlite (the log's word is needed to call a folder an orphan)."""
    folder = Cache.resolve(cache).runs_dir
    if not (folder / LOG_FILE).is_file():
        return []
    with _database(folder, write=False) as connection:  # links, damage and the format version checked
        if not os.access(folder, os.W_OK):  # nobody can publish there now: the log as it is
            return _unlisted(folder, _logged_ids(connection))
    try:
        locker = sqlite3.connect(folder / LOG_FILE, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            with _transaction(locker):  # waits for a fit between publishing its folder and committing; writes nothing
                return _unlisted(folder, _logged_ids(locker))
        finally:
            locker.close()
    except sqlite3.Error as exc:
        raise _log_error(folder / LOG_FILE, exc) from None


def runs_folder_problems(cache=None) -> list[str]:
    """What `featx verify` says of the runs folder, one line each ([]: sound): its orphan run folders, or why it
    cannot be looked at (a link featx refuses, a damaged log)."""
    try:
        return [
            f"orphan run folder {path} (no row in the runs log: a fit killed before it logged the run); "
            "`featx prune` removes it"
            for path in orphan_runs(cache)
        ]
    except FeatxError as exc:
        return [str(exc)]


def remove_orphan_runs(cache=None) -> list[str]:
    """Delete the orphan run folders (`orphan_runs`); returns their run ids. Each is renamed to a staging name inside
    the log's write transaction (so never a folder whose fit is committing its row), then deleted; a kill leaves
    that staging folder, which the next command that writes the log deletes."""
    folder = Cache.resolve(cache).runs_dir
    if not (folder / LOG_FILE).is_file():
        return []
    trash = []
    with _database(folder, write=True) as connection:
        with _transaction(connection):
            for path in _unlisted(folder, _logged_ids(connection)):
                staging = folder / staging_name(STAGING_RM, path.name)
                safepath.rmtree(folder, staging, ignore_errors=True)  # left by a dead process that had this pid
                rename_run(folder, path, staging)
                trash.append(staging)
        fsync_dir(folder)
        for staging in trash:
            safepath.rmtree(folder, staging, ignore_errors=True)
    return [parse_staging(path.name, STAGING_RM).label for path in trash]


def _logged_ids(connection: sqlite3.Connection) -> set[str]:
    if not connection.execute("SELECT 1 FROM sqlite_master WHERE name='runs'").fetchone():
        return set()
    return {row[0] for row in connection.execute("SELECT run_id FROM runs")}


def _unlisted(folder: Path, logged: set[str]) -> list[Path]:
    """The run folders in `folder` (real folders named by a run id; links are never run folders) not in `logged`."""
    return sorted(
        path
        for path in folder.iterdir()
        if valid_run_id(path.name) and path.name not in logged and path.is_dir() and not path.is_symlink()
    )


def finish_removals(cache=None) -> None:
    """Delete what killed rm/prune/fit processes left in the runs folder (as every write to the log does), where
    there is a log and the folder is writable; else nothing."""
    folder = Cache.resolve(cache).runs_dir
    if (folder / LOG_FILE).is_file() and os.access(folder, os.W_OK):
        with _database(folder, write=True):
            pass


def append_run(cache, row: dict, *, staged: StagedRun | None = None) -> None:
    """Add one row (keys: COLUMNS, and any of SELECTION_COLUMNS) to the runs log of `cache` (a Cache or cache folder); with `staged`, publish
    its folder in the same transaction. The run id must have new_run_id's format."""
    if not valid_run_id(row.get("run_id")):
        raise FeatxError(
            f"run id {str(row.get('run_id'))[:80]!r} is not a featx run id (YYYYMMDD-HHMMSS-xxxxxx, "
            "as new_run_id makes); nothing was logged"
        )
    folder = writable_folder(Cache.resolve(cache).runs_dir, "runs")
    if staged is not None:  # on disk before it is published
        sync_staged(staged)
    with _database(folder, write=True) as connection:
        try:
            with _transaction(connection):
                _insert(connection, pd.DataFrame([row], columns=[*COLUMNS, *SELECTION_COLUMNS]))
                if staged is not None:
                    publish(staged)
                    kill_point()  # published, not yet committed: a kill here leaves an orphan (orphan_runs)
        except BaseException:
            if staged is not None:
                unpublish(staged)  # the row is rolled back: so is the folder
            raise
    if staged is not None:
        fsync_dir(folder)


def delete_runs(run_ids: list[str], cache=None) -> None:
    """Remove runs: their rows are deleted, and their ids recorded in the table `removing`, in one transaction,
    then their folders are deleted. Every id and folder is checked (run_folder) before anything changes.

    A failure or kill before the commit removes nothing; after it, the runs are gone from the log and the next
    command that writes the log (fit, compare, tune, rm, prune) deletes the folders left: a listed run always
    has its folder, and a removed one never comes back.
    """
    folder = writable_folder(Cache.resolve(cache).runs_dir, "runs")
    for run_id in run_ids:
        run_folder(folder, run_id)
    with _database(folder, write=True) as connection:
        with _transaction(connection):
            for run_id in run_ids:
                connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                connection.execute("DELETE FROM selection_scores WHERE run_id = ?", (run_id,))
                connection.execute("INSERT OR IGNORE INTO removing (run_id) VALUES (?)", (run_id,))
            kill_point()
        kill_point()
        for run_id in run_ids:
            try:
                discard(folder, run_id)
            except OSError as exc:
                raise RunFailed(
                    f"{len(run_ids)} run(s) are removed from the log, but deleting the folder of run "
                    f"{run_id} failed ({os_reason(exc)}); the next fit, rm or prune deletes it"
                ) from None
            connection.execute("DELETE FROM removing WHERE run_id = ?", (run_id,))


# --- reading runs


@dataclass(frozen=True, eq=False)
class RunLog:
    """What `read_runlog` returns: every logged run featx acts on, and what the user should be told about the rest.

    table : DataFrame with COLUMNS and SELECTION_COLUMNS, one row per logged run in the order they were logged
        (empty with those columns if none); rows whose run_id is not in new_run_id's format are left out
    warnings : lines for the user (a zero-byte log, rows left out), to print as "warning: ..."
    invalid_ids : the run ids of the rows left out (never listed, loaded or removed; naming one is an error)
    """

    table: pd.DataFrame
    warnings: list = field(default_factory=list)
    invalid_ids: list = field(default_factory=list)


def read_log(cache=None) -> pd.DataFrame:
    """Every logged run, in the order they were logged: `read_runlog(...).table`, for readers that do not report
    the log's warnings (`featx runs`, `rm` and `prune` do: they read the RunLog)."""
    return read_runlog(cache).table


def read_runlog(cache=None) -> RunLog:
    """The runs log as a RunLog: every logged run, in the order they were logged (empty frame with COLUMNS if none),
    with its SELECTION_COLUMNS (NaN where a run has none), and the warnings and invalid ids of the rows left out.

    cache : a Cache (its runs_dir: the log's folder) or a cache folder (None: the default one).
    An old runs.csv is migrated into runs.sqlite by the first fit; until then it is read as it is.
    Rows whose run_id is not in new_run_id's format are left out (never listed, loaded or removed); they, and a
    zero-byte log, are described in RunLog.warnings (lines for the user), their ids in RunLog.invalid_ids.
    A non-number in a numeric column is an error naming the file, column and run.
    """
    folder = Cache.resolve(cache).runs_dir
    path, warnings = folder / LOG_FILE, []
    table = None
    if path.exists():
        if path.stat().st_size == 0:
            warnings.append(
                f"runs log {path} is an empty file (0 bytes), so no runs are listed; if it held runs it "
                "was truncated: restore it from a backup (the next fit starts a new log in it)"
            )
        with _database(folder, write=False) as connection:
            if connection.execute("PRAGMA user_version").fetchone()[0]:  # 0: created, not yet initialized
                present = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}  # older formats lack some
                if "run_id" not in present:
                    raise sqlite3.DatabaseError("it has no table runs")
                table = pd.read_sql_query(
                    f"SELECT {', '.join(c for c in COLUMNS if c in present)} FROM runs ORDER BY seq", connection
                ).pipe(_with_view_columns)
                table = table.merge(_selection_scores(connection), on="run_id", how="left")
                table = _with_spec_columns(table, old="spec" not in present)
    if table is None:
        old = folder / OLD_LOG_FILE
        path = old if old.exists() and not (path.exists() and path.stat().st_size) else path
        table = _read_old_csv(old).astype({"run_id": str}) if old.exists() else pd.DataFrame(columns=list(COLUMNS))
        table = _with_spec_columns(table.reindex(columns=[*COLUMNS, *SELECTION_COLUMNS]), old=True)
    return _checked(table[[*COLUMNS, *SELECTION_COLUMNS]], path, warnings)


def _checked(table: pd.DataFrame, path: Path, warnings: list[str]) -> RunLog:
    """The log's rows with numbers as numbers (REALS as float: NULLs would read as objects) and only valid run ids,
    with `warnings` and a warning for the invalid ids left out."""
    for column in (*REALS, *SELECTION_REALS, *INTEGERS):
        values = pd.to_numeric(table[column].where(table[column].notna()), errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            raise FeatxError(
                f"runs log {path} has a non-number ({str(table.loc[bad, column].iloc[0])[:40]!r}) in its "
                f"numeric column {column} (run {str(table.loc[bad, 'run_id'].iloc[0])[:40]!r}); repair "
                "that value (e.g. with sqlite3) or restore the log from a backup"
            )
        if column not in INTEGERS:
            table[column] = values.astype(float)
    valid = table["run_id"].map(valid_run_id).astype(bool)
    invalid = [str(r) for r in table.loc[~valid, "run_id"]]
    if invalid:
        shown = ", ".join(repr(r[:40]) for r in invalid[:3]) + (", ..." if len(invalid) > 3 else "")
        warnings.append(
            f"runs log {path} has {len(invalid)} row(s) whose run_id is not a featx run id ({shown}); "
            "they are ignored (never listed, loaded or removed): the log was edited or not written "
            "by featx"
        )
        table = table[valid].reset_index(drop=True)
    return RunLog(table, warnings, invalid)


def _selection_scores(connection: sqlite3.Connection) -> pd.DataFrame:
    """The selection_scores table; empty in a log that no featx with CV has written to yet."""
    if not connection.execute("SELECT 1 FROM sqlite_master WHERE name='selection_scores'").fetchone():
        return pd.DataFrame(columns=["run_id", *SELECTION_COLUMNS])
    table = pd.read_sql_query(f"SELECT run_id, {', '.join(SELECTION_COLUMNS)} FROM selection_scores", connection)
    text = ["cv", "cv_folds"]  # NULL reads as None, a run without a row here as NaN: one missing value, NaN
    return table.assign(**{c: table[c].astype(object).where(table[c].notna(), float("nan")) for c in text})


def id_matches(run_ids: pd.Series, target) -> pd.Series:
    """Which of `run_ids` a user's `target` names: the whole id, a prefix, or the short id tables show (a suffix)."""
    target = str(target)
    return run_ids.str.startswith(target) | run_ids.str.endswith(target)


def find_run(run_id: str, cache=None) -> pd.Series:
    """The log row of a run, by full id, unique prefix or unique suffix (the short id tables show)."""
    log = read_runlog(cache)
    table = log.table
    matches = table[id_matches(table["run_id"], run_id)]
    if matches.empty and any(bad.startswith(str(run_id)) for bad in log.invalid_ids):
        where = Cache.resolve(cache).runs_dir / LOG_FILE
        raise FeatxError(
            f"run {str(run_id)[:80]!r} has an invalid run id in {where} (featx writes "
            "YYYYMMDD-HHMMSS-xxxxxx); it is not acted on: the log was edited or not written by featx"
        )
    if len(matches) != 1:
        where = Cache.resolve(cache).runs_dir / LOG_FILE
        problem = "is ambiguous" if len(matches) else f"is not in {where}"
        raise FeatxError(
            f"run '{run_id}' {problem}; see `featx runs` for run ids (and pass the right --cache-dir or --runs-dir)"
        )
    return matches.iloc[0]
