"""The experiment log and saved models, kept next to the cache they were fitted on:

    <cache_dir>/runs/runs.csv         one row per fit (COLUMNS), appended by every fit and compare
    <cache_dir>/runs/<run_id>/        model.joblib, metrics.json, confusion_{val,test}.csv/.png, history.csv
    <cache_dir>/reports/              compare tables and charts, t-SNE plots

A row is appended under an OS file lock by rewriting the table to a temporary file and renaming it, so
concurrent fits never lose a row and a killed fit never leaves a torn one. Models are joblib pickles and
unpickling runs code, so a model is only loaded from this runs folder and only if its sha256 matches the log.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import os
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

import joblib
import pandas as pd

from featx.cache.atomic import atomic_path
from featx.cache.store import default_cache_dir
from featx.errors import FeatxError

COLUMNS = (
    "run_id", "timestamp", "cache_key", "cache_entry", "backbone", "layers", "layer_names", "n_features",
    "classifier", "params", "all_params", "transforms", "seed", "n_train",
    "val_accuracy", "val_f1_weighted", "val_f1_macro", "test_accuracy", "test_f1_weighted", "test_f1_macro",
    "fit_seconds", "predict_seconds", "model_path", "model_sha256",
)
DISPLAY = ("run_id", "backbone", "layers", "n_features", "classifier", "params", "transforms",
           "val_accuracy", "val_f1_macro", "test_accuracy", "test_f1_macro", "fit_seconds")
MODEL_FILE = "model.joblib"


def runs_dir(cache_dir=None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "runs"


def reports_dir(cache_dir=None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "reports"


def new_run_id() -> str:
    """Sortable by time, unique across concurrent processes."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@contextmanager
def _locked(folder: Path):
    """Blocking flock on folder/.lock; the kernel releases it if the process dies."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append_run(cache_dir, row: dict) -> None:
    """Add one row (keys: COLUMNS) to the runs table."""
    folder = runs_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "runs.csv"
    with _locked(folder), atomic_path(table) as tmp:
        old = table.read_bytes() if table.exists() else b""
        with open(tmp, "wb") as f:
            f.write(old)
        with open(tmp, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, COLUMNS)
            if not old:
                writer.writeheader()
            writer.writerow(row)


def read_log(cache_dir=None) -> pd.DataFrame:
    """Every logged run, in the order they were logged (empty frame with COLUMNS if none)."""
    table = runs_dir(cache_dir) / "runs.csv"
    if not table.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.read_csv(table, dtype={"run_id": str, "cache_key": str, "model_sha256": str}, keep_default_na=False,
                       na_values=[""])


def runs(cache_dir=None, sort: str = "val_accuracy", clf=None, backbone=None, layers=None, top=None) -> pd.DataFrame:
    """The runs table, best first: descending by `sort` (ascending for *_seconds columns: fastest first).

    clf, backbone : keep rows with exactly this classifier / backbone (a comma list allows several).
    layers : keep rows whose layer spec or layer names contain this substring. top : keep the first N.
    """
    table = read_log(cache_dir)
    if sort not in table.columns:
        raise FeatxError(f"cannot sort runs by '{sort}'; choose one of {', '.join(COLUMNS)}")
    for column, wanted in (("classifier", clf), ("backbone", backbone)):
        if wanted:
            table = table[table[column].isin([w.strip() for w in wanted.split(",")])]
    if layers:
        table = table[table["layers"].str.contains(layers, regex=False) | table["layer_names"].str.contains(layers, regex=False)]
    table = table.sort_values(sort, ascending=sort.endswith("_seconds"), kind="stable", na_position="last")
    return table.head(top).reset_index(drop=True) if top else table.reset_index(drop=True)


def format_runs(table: pd.DataFrame) -> str:
    """The DISPLAY columns as a text table (long layer lists cut), for the CLI and pipeline summaries."""
    if table.empty:
        return "no runs yet; run `featx fit` or `featx compare`"
    layers = table["layers"].where(table["layers"].str.len() <= 40, table["layers"].str.slice(0, 37) + "...")
    return table[list(DISPLAY)].assign(layers=layers).to_string(index=False)


def save_model(pipeline, path: Path) -> str:
    """joblib-dump the fitted Pipeline atomically; returns its sha256 for the log."""
    with atomic_path(path) as tmp:
        joblib.dump(pipeline, tmp)
    return file_sha256(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_run(run_id: str, cache_dir=None) -> pd.Series:
    """The log row of a run, by full id or unique prefix."""
    table = read_log(cache_dir)
    matches = table[table["run_id"].str.startswith(str(run_id))]
    if len(matches) != 1:
        problem = "is ambiguous" if len(matches) else f"is not in {runs_dir(cache_dir) / 'runs.csv'}"
        raise FeatxError(f"run '{run_id}' {problem}; see `featx runs` for run ids (and pass the right --cache-dir)")
    return matches.iloc[0]


def load_model(run_id: str, cache_dir=None):
    """(fitted Pipeline, log row) of a run; refuses a file outside the runs folder or whose sha256 changed."""
    row = find_run(run_id, cache_dir)
    root = runs_dir(cache_dir).resolve()
    path = (root / row["model_path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise FeatxError(f"model of run {row['run_id']} ('{row['model_path']}') is not a file inside {root}; refusing to load it")
    if file_sha256(path) != row["model_sha256"]:
        raise FeatxError(
            f"model file {path} does not match the sha256 recorded for run {row['run_id']} (modified or replaced); "
            "refusing to unpickle it: fit the model again"
        )
    return joblib.load(path), row
