"""Checking and removing what experiments leave behind: `featx verify`'s whole-cache check, `featx rm` (entries and
runs by name) and `featx prune`."""

from __future__ import annotations

import pandas as pd

from featx.cache import safepath
from featx.cache.remove import remove_entries
from featx.cache.store import Cache
from featx.errors import FeatxError, RunFailed
from featx.runs.ranking import entry_metric, rank, split_labels
from featx.runs.reports import compare_reports, report_runs
from featx.runs.store import (
    delete_runs,
    finish_removals,
    id_matches,
    read_runlog,
    remove_orphan_runs,
    runs_folder_problems,
)
from featx.selection.metrics import METRICS


def check(cache=None, entry=None) -> tuple:
    """What `featx verify` reports: (featx.cache.tables.verify_all's table of `entry`, or of every entry, and, for
    the whole cache, the runs folder's problems: orphan run folders a killed fit left, a link featx refuses)."""
    from featx.cache.tables import verify_all

    cache = Cache.resolve(cache)
    return verify_all(cache, entry), [] if entry is not None else runs_folder_problems(cache)


def rm(targets: list[str], *, cache=None, log=print) -> None:
    """Remove runs (by id or unique prefix: log row and run folder) and cache entries (by name,
    key prefix or folder). Every target is resolved, and every entry's lock taken, before anything is deleted; runs of a removed entry stay
    logged (their data column then says the entry is gone). A log row whose run id is not featx's is never
    acted on (one warning line; naming it is an error)."""
    cache = Cache.resolve(cache)
    logged = read_runlog(cache)
    table = logged.table
    for warning in logged.warnings:
        log(f"warning: {warning}")
    run_ids, folders = [], []
    for target in targets:
        matches = list(table.loc[id_matches(table["run_id"], target), "run_id"])
        if not matches and any(bad.startswith(target) for bad in logged.invalid_ids):
            raise FeatxError(
                f"run {target[:80]!r} has an invalid run id in the runs log (featx writes "
                "YYYYMMDD-HHMMSS-xxxxxx), so it is not acted on; nothing was removed"
            )
        if len(matches) > 1:
            raise FeatxError(f"run '{target}' is ambiguous ({', '.join(matches[:5])}...); give more of the run id")
        if matches:
            run_ids += matches
            continue
        try:
            folders.append(cache.find(target))
        except FeatxError:
            raise FeatxError(
                f"'{target}' is neither a logged run (see `featx runs`) nor a cache entry in "
                f"'{cache.root}' (see `featx ls`); nothing was removed"
            ) from None
    remove_entries(folders, before=lambda: _delete_runs(run_ids, cache))  # locks first: all or none
    for run_id in run_ids:
        log(f"removed run {run_id}")
    for folder in folders:
        log(f"removed cache entry {folder.name}")


def prune(keep_best: int, *, metric: str | None = None, cache=None, log=print) -> list[str]:
    """Keep the `keep_best` best runs of each cache entry and split (runs on different data, or scored on different
    rows, are not comparable); remove the other runs and the compare reports none of whose runs remain. Returns the
    ids removed. Log rows whose run id is not featx's are kept (one warning line).

    metric : None ranks as every table of runs does (featx.runs.ranking.rank: the selection score of the
    entry's default metric, protocol by protocol, CV first); a metric name (balanced_accuracy, ...) ranks by that
    metric's selection score the same way; any other log column ranks by that column alone."""

    if keep_best < 0:
        raise FeatxError(f"--keep-best {keep_best} must be 0 or more")
    cache = Cache.resolve(cache)
    logged = read_runlog(cache)
    table = logged.table
    for warning in logged.warnings:
        log(f"warning: {warning}")
    if metric is not None and metric not in METRICS and metric not in table.columns:
        raise FeatxError(f"cannot rank runs by '{metric}'; choose one of {', '.join([*METRICS, *table.columns])}")
    if metric is None or metric in METRICS:
        ranked = pd.concat(
            [
                rank(group, metric or entry_metric(cache, key)[0]).table
                for key, group in table.groupby(table["cache_key"].fillna(""), sort=False)
            ]
            or [table]
        )
    else:
        ranked = table.sort_values(metric, ascending=metric.endswith("_seconds"), kind="stable", na_position="last")
    ranked = ranked.reset_index(drop=True)  # rank() numbers each entry's rows from 0
    entry, split = ranked["cache_key"].fillna(""), split_labels(ranked)
    rank_in_group = ranked.groupby([entry, split], sort=False).cumcount()
    doomed = list(ranked.loc[rank_in_group >= keep_best, "run_id"])
    if (split.groupby(entry).nunique() > 1).any():
        log(
            f"note: some cache entries have runs made on different splits (see `featx runs`); the {keep_best} best "
            "of each split are kept, since scores on different rows are not comparable"
        )
    kept = set(table["run_id"]) - set(doomed)
    reports_dir = cache.reports_dir  # a link there: refused before anything goes
    reports = [
        safepath.check_write(reports_dir, folder)  # likewise a compare folder that is a link
        for folder in compare_reports(cache)
        if not kept & report_runs(folder)
    ]
    _delete_runs(doomed, cache)
    orphans = remove_orphan_runs(cache)  # run folders a killed fit never logged
    for folder in reports:
        try:
            safepath.rmtree(reports_dir, folder)
        except OSError as exc:
            raise RunFailed(
                f"removing report {folder} failed ({exc.strerror or exc}); the runs are removed, "
                "remove that folder by hand"
            ) from None
    by = metric or "the selection score (each entry's default metric; CV runs first)"
    unlisted = f", {len(orphans)} orphan run folder(s) (never logged)" if orphans else ""
    log(
        f"removed {len(doomed)} run(s){unlisted} and {len(reports)} compare report(s); kept the {keep_best} best by {by} "
        f"of each cache entry and split ({len(kept)} run(s))"
    )
    return doomed


def _delete_runs(run_ids, cache) -> None:
    if not run_ids:  # still, the folders of runs removed by a killed rm or prune go now
        finish_removals(cache)
        return
    try:
        delete_runs(run_ids, cache)
    except OSError as exc:  # before the log changed (its folder): delete_runs says so itself after
        raise RunFailed(f"removing runs failed ({exc.strerror or exc}); nothing was removed") from None
