"""One ranking rule for every list of runs (compare, runs, tune, prune, pipeline summaries, reports).

A run's selection score is its CV mean of the ranking metric where it has one, else its val score; test
never ranks anything. The metric is chosen once per cache entry from the class balance of its selection
rows (featx.selection.cv.default_metric) unless the user names one. Scores from different
protocols (one val split, K-fold CV x R) are not comparable: runs are ranked within their protocol, the
protocol with the most splits first, and a recommendation comes from that first group. Neither are runs scored
on different train/val/test splits of an entry (an extract with another --split rewrites it): each split's runs
are ranked on their own, the split of the most recently logged run first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from featx.cache.pick import key_data_label
from featx.cache.store import Cache
from featx.classifiers import BASELINES
from featx.errors import FeatxError
from featx.selection.metrics import METRICS, SELECTION_SPLITS, default_metric
from featx.selection.spec import cv_column, score_column
from featx.terminal import UNLIMITED, fit_lines, fit_table

VAL = "val"
UNKNOWN_SPLIT = "unknown"  # how runs logged before split fingerprints existed are grouped


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


def entry_metric(cache, cache_key: str) -> tuple[str, str]:
    """(metric, one-line reason) for the entry with `cache_key` (a combined run's "a+b": its first entry), chosen
    from the class balance of its train+val rows, as compare and tune choose it. An entry no longer in the
    cache ranks by accuracy, saying why."""
    cache = Cache.resolve(cache)
    key = str(cache_key).split("+")[0]
    try:
        entry = cache.open(key)
    except FeatxError:
        return "accuracy", f"ranking by accuracy: entry {key[:12]} is not in this cache (its class balance is unknown)"
    rows = np.isin(entry.split, SELECTION_SPLITS) & entry.valid
    return default_metric(entry.labels[rows])


def protocol_label(label) -> str:
    """'val', or a CV label such as 'cv3x1', in words: 'one val split' / '3-fold CV x 1'."""
    match = re.fullmatch(r"cv(\d+)x(\d+)", str(label))
    if match is None:
        return "one val split"
    k, r = match.groups()
    return f"{k}-fold CV mean" + ("" if r == "1" else f" ({r} repeats)")


def _splits(label) -> int:
    match = re.fullmatch(r"cv(\d+)x(\d+)", str(label))
    return int(match[1]) * int(match[2]) if match else 1


@dataclass(frozen=True, eq=False)
class Ranking:
    """What `rank` returns: runs-log rows ranked by one rule, the metric they were ranked by and how.

    table : DataFrame, the rows with `split`, `selected_by`, `selection_score`, `selection_ci95` and `baseline`
        added, best first within each split and protocol
    metric : the ranking metric (a METRICS name)
    note : one or two lines saying how the rows were ranked (format_ranked prints them under the table)
    """

    table: pd.DataFrame
    metric: str
    note: str


def rank(table: pd.DataFrame, metric: str) -> Ranking:
    """Runs-log rows ranked by one rule: adds `split` (the split the run was scored on), `selected_by` (the
    protocol: "val" or the CV label), `selection_score`, `selection_ci95` (NaN on val) and `baseline`, and orders
    the rows by split (most recent first), then protocol (most splits first) and, within them, best score first
    (ties keep the logged order; rows without a score last). Ranking.note says how, in one or two lines."""
    if metric not in METRICS:
        raise FeatxError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    table = table.copy()
    table["selected_by"], table["selection_score"], table["selection_ci95"] = selection_score(table, metric)
    table["baseline"] = table["classifier"].isin(BASELINES)
    table["split"] = split_labels(table) if "split_fingerprint" in table else ""
    newest = recency(table["split"])
    table["_order"] = -table["selected_by"].map(_splits)
    table["_split"] = table["split"].map(newest)
    table = table.sort_values("selection_score", ascending=False, kind="stable", na_position="last")
    table = table.sort_values(["_split", "_order"], kind="stable").drop(columns=["_order", "_split"])
    table = table.reset_index(drop=True)
    protocols = list(dict.fromkeys(table["selected_by"]))
    if len(protocols) > 1:
        note = (
            f"ranked by {metric} within each protocol ({', '.join(protocol_label(p) for p in protocols)}): "
            "their scores are not comparable"
        )
    else:
        note = f"ranked by {metric}, {protocol_label(protocols[0]) if protocols else 'one val split'} (never test)"
    splits = splits_note(table)
    return Ranking(table, metric, note + (f"\n{splits}" if splits else ""))


def selection_score(table: pd.DataFrame, metric: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The rule, for runs-log rows: (selected_by, selection_score, selection_ci95) per row. A run with a CV mean of
    `metric` is scored by it (selected_by: its cv label, e.g. "cv5x1"; its CI), any other by its val score ("val";
    no CI); test never scores anything."""

    def column(name):
        return table[name].astype(float) if name in table else pd.Series(np.nan, table.index, dtype=float)

    cv = column(cv_column(metric, "mean"))
    selected_by = table["cv"].where(cv.notna(), VAL) if "cv" in table else pd.Series(VAL, table.index)
    return (
        selected_by,
        cv.where(cv.notna(), column(score_column(VAL, metric))),
        column(cv_column(metric, "ci95")).where(cv.notna()),
    )


def recommended_index(table: pd.DataFrame, metric: str) -> int:
    """The position in `table` (runs-log columns: classifier, val_<metric>, and cv, cv_<metric>_mean/_ci95 where
    scored by CV) of the row that recommended(rank(table, metric)) names; -1 when no row has a score. compare keeps
    that row's model."""
    if table.empty:
        return -1
    best = recommended(rank(table.reset_index(drop=True).assign(_position=range(len(table))), metric))
    return -1 if best is None else int(best["_position"])


def groups(ranked: pd.DataFrame) -> list[str]:
    """The columns rank()'s blocks are told apart by: the protocol, and the split where there are several."""
    return ["split", "selected_by"] if ranked["split"].nunique() > 1 else ["selected_by"]


def recommended(ranking: Ranking) -> pd.Series | None:
    """The model to recommend: the best non-baseline run of the first protocol group of rank()'s table."""
    ranked = ranking.table
    scored = ranked[~ranked["baseline"] & ranked["selection_score"].notna()]
    if scored.empty:
        return None
    first = scored[groups(ranked)].iloc[0]
    return scored[(scored[groups(ranked)] == first).all(axis=1)].iloc[0]


def model_name(row) -> str:
    """'logreg {"C": 0.1} standardize on top_activation' for a runs-log row."""
    params = "" if str(row.get("params") or "{}") == "{}" else f" {row['params']}"
    transforms = "" if str(row.get("transforms") or "none") == "none" else f" {row['transforms']}"
    layers = str(row["layers"])
    layers = layers if len(layers) <= 40 else layers[:37] + "..."
    return f"{row['classifier']}{params}{transforms} on {layers}"


def recommendation_line(ranking: Ranking) -> str:
    """Two lines: the recommended model (short run id), then why (its protocol and score, how many runs it beat,
    the majority baseline) and its test score, reported once."""
    best = recommended(ranking)
    ranked, metric = ranking.table, ranking.metric
    if best is None:
        return "recommended: none (no run has a selection score: the entry has no val rows; use --cv K)"
    group = ranked[(ranked[groups(ranked)] == best[groups(ranked)]).all(axis=1)]
    ci = "" if pd.isna(best["selection_ci95"]) else f" ± {best['selection_ci95']:.3f}"
    why = (
        f"best of {int((~group['baseline']).sum())} by {protocol_label(best['selected_by'])}, {metric} "
        f"{best['selection_score']:.3f}{ci}"
    )
    majority = group[group["classifier"] == "majority"]["selection_score"]
    if len(majority):
        why += f" (majority {majority.iloc[0]:.3f})"
    test = best.get(f"test_{metric}")
    tested = "" if test is None or pd.isna(test) else f"; test {float(test):.3f}, reported once"
    return f"recommended: {model_name(best)} (run {short_id(best['run_id'])})\n  why: {why}{tested}"


def short_id(run_id) -> str:
    """A run id's last 6 characters (its random part): unique in practice, and accepted wherever a run id is."""
    return str(run_id)[-6:]


def cut(text, width: int) -> str:
    """`text` within `width` characters, an ellipsis marking a cut."""
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_ranked(ranking: Ranking, *, wide: bool = False) -> str:
    """rank()'s table as text, one block per protocol, within the terminal's width (featx.terminal; wide: every
    column, whole, however wide).

    Data and backbone are not repeated per row: say them once above (source_line). Scores have 3 decimals."""
    ranked, metric = ranking.table, ranking.metric
    if ranked.empty:
        return "no runs yet; run `featx fit` or `featx compare`"
    blocks = []
    by = groups(ranked)
    for key, group in ranked.groupby(by, sort=False):
        protocol = key[-1] if isinstance(key, tuple) else key
        split = f"split {key[0]}, " if len(by) > 1 else ""
        shown = pd.DataFrame(
            {
                "#": range(1, len(group) + 1),
                "run": group["run_id"] if wide else group["run_id"].map(short_id),
                "layers": [
                    ("(baseline)" if b else layers) if wide else cut("-" if b else layers, 24)
                    for b, layers in zip(group["baseline"], group["layers"])
                ],
                "model": [m if wide else cut(m, 32) for m in (group.apply(_model_cell, axis=1))],
                "features": group["n_features"].map(lambda v: "" if pd.isna(v) else f"{int(v)}"),
                metric: [_score(s, c) for s, c in zip(group["selection_score"], group["selection_ci95"])],
                "val_accuracy": group["val_accuracy"].map(_three),
                "fit_s": group["fit_seconds"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}"),
            }
        )
        if wide:
            shown = shown.assign(
                data=group.get("data", ""),
                backbone=group["backbone"],
                test_acc=group["test_accuracy"].map(_three),
                **{f"test_{metric}": group[f"test_{metric}"].map(_three)},
            )
        table = fit_table(shown, UNLIMITED if wide else None)
        blocks.append(f"{split}scored by {protocol_label(protocol)} ({len(group)} run(s)):\n" + table)
    return "\n".join(blocks) + "\n" + (ranking.note if wide else fit_lines(ranking.note))


def _model_cell(row) -> str:
    if row["baseline"]:
        return f"{row['classifier']} (baseline)"
    params = (
        "" if str(row.get("params") or "{}") == "{}" else " " + str(row["params"]).replace('"', "").replace(" ", "")
    )
    transforms = "" if str(row.get("transforms") or "none") == "none" else f" +{row['transforms']}"
    return f"{row['classifier']}{params}{transforms}"


def _score(score, ci) -> str:
    if pd.isna(score):
        return ""
    return f"{score:.3f}" + ("" if pd.isna(ci) else f" ± {ci:.3f}")


def _three(value) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):.3f}"


def source_line(table: pd.DataFrame, labels: dict) -> str:
    """'data: ...; backbone: ...' once for the runs of `table` (one per entry when they come from several);
    labels : {cache key: data label} (featx.cache.pick.data_labels)."""
    lines = []
    for key, group in table.groupby(table["cache_key"].astype(str), sort=False):
        data = key_data_label(key, labels)
        lines += [f"data: {data}", f"backbone: {group['backbone'].iloc[0]} (entry {group['cache_entry'].iloc[0]})"]
    return fit_lines("\n".join(lines))
