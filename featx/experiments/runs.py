"""The runs table: the logged runs as `featx runs` lists them (filtered, ranked by the selection score within
each split) and as text (format_runs), and the whole log as a CSV (export_csv). The log itself is
featx.experiments.runlog's; the run folders featx.experiments.runfolders'; model files featx.experiments.models'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from featx.cache.atomic import atomic_path
from featx.cache.pick import data_labels, key_data_label
from featx.errors import FeatxError
from featx.experiments.runfolders import os_reason, runs_cache
from featx.experiments.runlog import SELECTION_METRICS, read_log, read_runlog
from featx.terminal import fit_lines, fit_table

DISPLAY = (
    "run_id",
    "backbone",
    "data",
    "split",
    "layers",
    "n_features",
    "classifier",
    "params",
    "transforms",
    "views",
    "selected_by",
    "selection_score",
    "val_accuracy",
    "val_f1_macro",
    "test_accuracy",
    "test_f1_macro",
    "fit_seconds",
)
UNKNOWN_SPLIT = "unknown"  # how runs logged before split fingerprints existed are grouped


def export_csv(path, cache_dir=None, *, runs_dir=None) -> Path:
    """Write the whole log, in logged order, as a CSV file (atomically); returns its path."""
    path = Path(path)
    table = read_log(cache_dir, runs_dir=runs_dir)
    try:
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    except OSError as exc:
        raise FeatxError(f"cannot write {path} ({os_reason(exc)}); choose a writable path for --csv") from None
    return path


@dataclass(frozen=True, eq=False)
class RunsTable:
    """What `runs_table` returns: the runs table and what to say under it.

    table : DataFrame, one row per listed run (the log's columns plus selected_by, selection_score, split, data),
        best first by the selection score within each split (or by `sort`)
    order : one or two lines saying how the table is ordered (format_runs prints them under it)
    warnings : read_runlog's (rows of the log featx does not act on), for the caller to print
    """

    table: pd.DataFrame
    order: str
    warnings: list = field(default_factory=list)


def runs(
    cache_dir=None,
    *,
    sort: str | None = None,
    metric: str = "accuracy",
    clf=None,
    backbone=None,
    layers=None,
    top=None,
    runs_dir=None,
) -> pd.DataFrame:
    """The runs table, best first by the selection score, never by test: `runs_table(...).table` (see there)."""
    return runs_table(
        cache_dir, sort=sort, metric=metric, clf=clf, backbone=backbone, layers=layers, top=top, runs_dir=runs_dir
    ).table


def runs_table(
    cache_dir=None,
    *,
    sort: str | None = None,
    metric: str = "accuracy",
    clf=None,
    backbone=None,
    layers=None,
    top=None,
    runs_dir=None,
) -> RunsTable:
    """The runs table, best first by the selection score, never by test, with the lines saying how it was ordered
    (RunsTable.order) and read_runlog's warnings.

    The selection score (columns `selection_score`, `selected_by`) is a run's CV mean of `metric` where it has
    one, else its val score: what a model may be chosen by. sort : order by this column instead (descending;
    ascending for *_seconds columns: fastest first). clf, backbone : keep rows with exactly this classifier /
    backbone (a comma list allows several). layers : keep rows whose layer spec or layer names contain this
    substring. top : keep the first N.
    Runs made on different splits (column `split`: split_fingerprint's first 8 digits, "unknown" for runs logged
    before featx recorded it) were scored on different rows and are never ranked together: the table is ranked
    within each split, the split of the most recent run first.
    """
    if metric not in SELECTION_METRICS:
        raise FeatxError(f"unknown metric '{metric}'; choose one of {', '.join(SELECTION_METRICS)}")
    log = read_runlog(cache_dir, runs_dir=runs_dir)
    table = log.table
    from featx.experiments.ranking import selection_score  # the one ranking rule

    table["selected_by"], table["selection_score"], _ = selection_score(table, metric)
    if sort is not None and sort not in table.columns:
        raise FeatxError(f"cannot sort runs by '{sort}'; choose one of {', '.join(table.columns)}")
    for column, wanted in (("classifier", clf), ("backbone", backbone)):
        if wanted:
            table = table[table[column].isin([w.strip() for w in wanted.split(",")])]
    if layers:
        table = table[
            table["layers"].str.contains(layers, regex=False) | table["layer_names"].str.contains(layers, regex=False)
        ]
    by = sort or "selection_score"
    table["split"] = split_labels(table)
    table = table.sort_values(by, ascending=by.endswith("_seconds"), kind="stable", na_position="last")
    table = table.sort_values("split", key=lambda split: split.map(recency(table["split"])), kind="stable")
    labels = data_labels(runs_cache(cache_dir, runs_dir))  # a combined run's key joins its entries' keys with "+"
    table = table.assign(data=table["cache_key"].map(lambda key: key_data_label(key, labels)))
    table = table.head(top).reset_index(drop=True) if top else table.reset_index(drop=True)
    return RunsTable(table, _order_note(table, sort, metric), log.warnings)


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
    return (
        f"these runs were made on {n} different splits (column split; 'unknown': logged before featx recorded "
        "it), so each split's runs are ranked on their own, the most recent split first: scores on different "
        "test rows are not comparable"
    )


def _order_note(table: pd.DataFrame, sort: str | None, metric: str) -> str:
    splits = splits_note(table)
    if sort is None:
        n_cv = int((table["selected_by"] != "val").sum())
        note = (
            f"best first by {metric}: the CV mean for the {n_cv} run(s) that have one, else val "
            "(selection score; never test)"
        )
    else:
        note = f"ordered by {sort}" + (
            ": a test score, for reporting; choose models by their selection score (the default order)"
            if sort.startswith("test_")
            else ""
        )
    return note + (f"\n{splits}" if splits else "")


def format_runs(listed: RunsTable) -> str:
    """The DISPLAY columns of runs_table's table as a text table (long layer lists cut), for the CLI, with the
    line saying how the table is ordered."""
    table = listed.table
    if table.empty:
        return "no runs yet; run `featx fit` or `featx compare`"
    layers = table["layers"].where(table["layers"].str.len() <= 40, table["layers"].str.slice(0, 37) + "...")
    views = table["views"].astype(str) + pd.to_numeric(table["tta"]).map({1: " +tta"}).fillna("")
    hidden = {"views": (views == "id").all(), "split": "split" in table.columns and table["split"].nunique() < 2}
    columns = [c for c in DISPLAY if c in table.columns and not hidden.get(c)]  # plain, one split: no column
    shown = fit_table(table[columns].assign(layers=layers, views=views)[columns])
    return f"{shown}\n{fit_lines(listed.order)}"
