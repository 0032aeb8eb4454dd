"""The runs table: the logged runs as `featx runs` lists them (filtered, ranked by the selection score within
each split) and as text (format_runs), and the whole log as a CSV (export_csv). The log itself is
featx.runs.store's; the run folders featx.runs.folders'; model files featx.runs.models'.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from featx.cache.atomic import atomic_path
from featx.cache.pick import data_labels, key_data_label
from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.runs.folders import os_reason
from featx.runs.ranking import (
    entry_metric,
    format_ranked,
    groups,
    rank,
    recency,
    selection_score,
    source_line,
    split_labels,
    splits_note,
)
from featx.runs.store import SELECTION_METRICS, read_log, read_runlog
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


def export_csv(path, cache=None) -> Path:
    """Write the whole log, in logged order, as a CSV file (atomically); returns its path."""
    path = Path(path)
    table = read_log(cache)
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


@dataclass(frozen=True, kw_only=True)
class RunFilter:
    """Which logged runs a listing shows.

    clf, backbone : runs with exactly this classifier / backbone (a comma list allows several). data : runs whose
    data label (as `featx ls` shows it) or entry name contains this text. layers : runs whose layer spec or layer
    names contain this text. last : only the N most recently logged runs.
    """

    clf: str | None = None
    backbone: str | None = None
    data: str | None = None
    layers: str | None = None
    last: int | None = None

    def apply(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of `table` (runs-log rows; `data` needs a data column) this filter keeps, in their order."""
        for column, wanted in (("classifier", self.clf), ("backbone", self.backbone)):
            if wanted:
                table = table[table[column].isin([w.strip() for w in wanted.split(",")])]
        if self.data:
            table = table[
                table["data"].str.contains(self.data, regex=False)
                | table["cache_entry"].str.contains(self.data, regex=False)
            ]
        if self.layers:
            table = table[
                table["layers"].str.contains(self.layers, regex=False)
                | table["layer_names"].str.contains(self.layers, regex=False)
            ]
        return table.tail(self.last) if self.last else table


def list_runs(
    cache=None, *, sort: str | None = None, metric: str = "accuracy", where: RunFilter | None = None, top=None
) -> pd.DataFrame:
    """The runs table, best first by the selection score, never by test: `runs_table(...).table` (see there)."""
    return runs_table(cache, sort=sort, metric=metric, where=where, top=top).table


def listing(
    cache=None,
    *,
    sort: str | None = None,
    metric: str | None = None,
    where: RunFilter | None = None,
    top: int | None = None,
    wide: bool = False,
) -> tuple[str, list[str]]:
    """(text, warnings): what `featx runs` prints. By default the runs of each cache entry ranked by the one rule
    (featx.runs.ranking.rank: the selection score within each protocol; format_runs_by_entry); with `sort`, one table
    ordered by that column (runs_table, format_runs). warnings : the runs log's (rows featx does not act on)."""
    if sort is None:
        return format_runs_by_entry(cache, metric=metric, where=where, top=top, wide=wide)
    listed = runs_table(cache, sort=sort, metric=metric or "accuracy", where=where, top=top)
    return format_runs(listed), listed.warnings


def runs_table(
    cache=None, *, sort: str | None = None, metric: str = "accuracy", where: RunFilter | None = None, top=None
) -> RunsTable:
    """The runs table, best first by the selection score, never by test, with the lines saying how it was ordered
    (RunsTable.order) and read_runlog's warnings.

    The selection score (columns `selection_score`, `selected_by`) is a run's CV mean of `metric` where it has
    one, else its val score: what a model may be chosen by. sort : order by this column instead (descending;
    ascending for *_seconds columns: fastest first). where : which runs (RunFilter). top : keep the first N.
    Runs made on different splits (column `split`: split_fingerprint's first 8 digits, "unknown" for runs logged
    before featx recorded it) were scored on different rows and are never ranked together: the table is ranked
    within each split, the split of the most recent run first.
    """
    if metric not in SELECTION_METRICS:
        raise FeatxError(f"unknown metric '{metric}'; choose one of {', '.join(SELECTION_METRICS)}")
    log = read_runlog(cache)
    table = log.table
    table["selected_by"], table["selection_score"], _ = selection_score(table, metric)
    if sort is not None and sort not in table.columns:
        raise FeatxError(f"cannot sort runs by '{sort}'; choose one of {', '.join(table.columns)}")
    labels = data_labels(Cache.resolve(cache))  # a combined run's key joins its entries' keys with "+"
    table = table.assign(data=table["cache_key"].map(lambda key: key_data_label(key, labels)))
    table = (where or RunFilter()).apply(table)
    by = sort or "selection_score"
    table["split"] = split_labels(table)
    table = table.sort_values(by, ascending=by.endswith("_seconds"), kind="stable", na_position="last")
    table = table.sort_values("split", key=lambda split: split.map(recency(table["split"])), kind="stable")
    table = table.head(top).reset_index(drop=True) if top else table.reset_index(drop=True)
    return RunsTable(table, _order_note(table, sort, metric), log.warnings)


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


def format_runs_by_entry(
    cache=None, *, metric: str | None = None, where: RunFilter | None = None, top: int | None = None, wide: bool = False
) -> tuple[str, list[str]]:
    """(text, warnings) for `featx runs`: the logged runs of each cache entry, ranked by one rule (rank) within each protocol, with the
    entry's data and backbone and its metric (chosen from its class balance unless `metric`) said once above.

    where : which runs (RunFilter); top : the best N of each protocol group; wide : every column, run ids whole.
    warnings : read_runlog's (rows of the log featx does not act on), for the caller to print.
    """
    cache = Cache.resolve(cache)
    log = read_runlog(cache)
    table, warnings = log.table, log.warnings
    if table.empty:
        return "no runs yet; run `featx fit` or `featx compare`", warnings
    labels = data_labels(cache)
    table = table.assign(data=table["cache_key"].map(lambda key: key_data_label(key, labels)))
    table = (where or RunFilter()).apply(table)
    if table.empty:
        return "no runs match; run `featx fit` or `featx compare` (or loosen the filters)", warnings
    blocks = []
    for key, runs_of_entry in table.groupby(table["cache_key"].astype(str), sort=False):
        chosen, reason = (metric, f"ranking by {metric} (--metric)") if metric else entry_metric(cache, key)
        ranked = rank(runs_of_entry, chosen)
        if top:
            ranked = replace(
                ranked, table=ranked.table.groupby(groups(ranked.table), sort=False, group_keys=False).head(top)
            )
        blocks.append(
            "\n".join([source_line(runs_of_entry, labels), fit_lines(reason), format_ranked(ranked, wide=wide)])
        )
    return "\n\n".join(blocks), warnings
