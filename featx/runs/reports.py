"""Report folders: the one writer and reader of what compare, tune and a pipeline leave under <reports>/.

    <reports>/compare-<id>/            results.csv (the table, best first), layer_comparison.png, report.json
                                       (format_version, metric, score, entry, cache_key, best_line), command.txt
    <reports>/tune-<id>/               <clf>_curve.csv and <clf>_curve.png per classifier tuned, report.json
                                       (format_version, entry, cache_key, metric, selection, run_ids), command.txt
    <reports>/pipeline-<name>-<id>/    report.html and report.json (format_version, name, command, run_ids, plots)

<reports> is the Cache's `reports_dir`. Every report.json carries REPORT_VERSION; an unknown one is a one-line error.
The verbs hand their values here; `featx report` (featx.report) and `featx prune` read them back through this module.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from featx.cache import safepath
from featx.cache.atomic import atomic_path, write_json
from featx.errors import FeatxError, RunFailed
from featx.runs.folders import new_run_id, writable_folder

REPORT_INFO, REPORT_VERSION = "report.json", 1
COMMAND_FILE = "command.txt"
RESULTS_CSV, COMPARISON_PNG = "results.csv", "layer_comparison.png"
CURVE = "_curve"  # <clf>_curve.csv / .png of a tune report


def new_report_folder(cache, kind: str, name: str | None = None) -> Path:
    """A new, not yet created <reports>/<kind>-<id>/ (pipeline: pipeline-<name>-<id>) of `cache`; the reports
    folder is checked to be writable first (one line otherwise)."""
    reports = writable_folder(cache.reports_dir, "reports")
    label = kind if name is None else f"{kind}-{_safe(name)}"
    return reports / f"{label}-{new_run_id()}"


def _safe(name) -> str:
    return re.sub(r"[^\w.-]+", "_", str(name))[:60]


def _write_command(folder: Path, command: str | None) -> None:
    if command:
        with atomic_path(folder / COMMAND_FILE) as tmp:
            tmp.write_text(command + "\n", encoding="utf-8")


def _read_command(folder: Path) -> str | None:
    path = folder / COMMAND_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _read_info(folder: Path, required: bool = False) -> dict:
    path = folder / REPORT_INFO
    if not path.is_file():
        if required:
            raise FeatxError(f"{folder} has no {REPORT_INFO}; pass a report folder that featx wrote")
        return {}
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("format_version", None if required else REPORT_VERSION) != REPORT_VERSION:
        raise FeatxError(
            f"{path} has format version {info.get('format_version')}, this featx reads version "
            f"{REPORT_VERSION}; use the featx that wrote it"
        )
    return info


# --- compare


@dataclass
class CompareReport:
    """A compare report folder as read back (read_compare_report): what `featx report` shows."""

    folder: Path
    table: pd.DataFrame  # results.csv: the rows best first
    plot: Path | None  # layer_comparison.png
    metric: str | None  # the ranking metric (None: a folder written before report.json existed)
    score: str | None  # the column ranked by
    entry: str | None  # the cache entry's name
    best_line: str | None
    command: str | None  # the command line that ran it, if it was recorded


def write_compare_report(
    folder: Path, entry, table: pd.DataFrame, *, metric: str, score: str, best_line: str, command: str | None
) -> Path:
    """Create the compare report `folder` with its results.csv (`table`), report.json and command.txt; returns the
    path of results.csv. The comparison plot is drawn by the caller at comparison_plot(folder)."""
    folder.mkdir(parents=True)
    table.to_csv(folder / RESULTS_CSV, index=False)
    write_json(
        folder / REPORT_INFO,
        {
            "format_version": REPORT_VERSION,
            "metric": metric,
            "score": score,
            "entry": entry.name,
            "cache_key": entry.key,
            "best_line": best_line,
        },
    )
    _write_command(folder, command)
    return folder / RESULTS_CSV


def comparison_plot(folder: Path) -> Path:
    """Where a compare report's layer comparison is drawn."""
    return folder / COMPARISON_PNG


def read_compare_report(folder) -> CompareReport:
    """Read a compare report folder (<reports>/compare-<id>/) written by write_compare_report."""
    folder = Path(folder)
    try:
        table = pd.read_csv(folder / RESULTS_CSV, dtype={"run_id": str})
    except (OSError, ValueError) as exc:
        raise FeatxError(
            f"{folder} is not a readable compare report ({exc}); pass a compare-<id> folder that `featx compare` wrote"
        ) from None
    info = _read_info(folder)
    plot = comparison_plot(folder)
    return CompareReport(
        folder,
        table,
        plot if plot.is_file() else None,
        info.get("metric"),
        info.get("score"),
        info.get("entry"),
        info.get("best_line"),
        _read_command(folder),
    )


def compare_reports(cache) -> list[Path]:
    """The compare report folders of `cache`, oldest first."""
    return sorted(p for p in cache.reports_dir.glob("compare-*") if p.is_dir())


def report_runs(folder: Path) -> set[str]:
    """The run ids a compare report lists; {""} for a folder that is not a readable compare report (so that it is
    never taken for an empty one)."""
    try:
        results = safepath.check_read(folder.parent, folder / RESULTS_CSV)  # no link out of the reports folder
        return set(pd.read_csv(results, usecols=["run_id"], dtype=str)["run_id"])
    except (OSError, ValueError, safepath.LinkRefused):
        return {""}


# --- tune


@dataclass
class TuneReport:
    """A tune report folder as read back (read_tune_report): what `featx report` shows."""

    folder: Path
    curves: dict  # {classifier: (curve DataFrame, curve PNG path or None)}
    metric: str | None
    selection: str | None  # "val" or "cv<K>x<R>"
    run_ids: dict  # {classifier: run id of its logged refit}
    entry: str | None
    command: str | None


@contextmanager
def curve_files(folder: Path, name: str):
    """Yield (csv, png) paths of the search curve of `name` (a classifier, or head2toe) in the tune report `folder`
    (created if needed), whose run the block also logs. If the block fails, both are removed, and the folder too if
    nothing else is in it: a report folder only ever holds the curves of logged runs. A write error (disk full)
    becomes one line."""
    paths = [folder / f"{name}{CURVE}.csv", folder / f"{name}{CURVE}.png"]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield paths
    except BaseException as exc:
        for path in paths:
            path.unlink(missing_ok=True)
        with suppress(OSError):
            folder.rmdir()  # only if empty
        if isinstance(exc, OSError):
            raise RunFailed(
                f"writing the tune report {folder} failed ({exc.strerror or exc}); its run was not logged: "
                "free disk space (or pass --runs-dir naming another folder) and tune again"
            ) from None
        raise


def write_tune_report(
    folder: Path, entry, *, metric: str | None, selection: str | None, run_ids: dict, command: str | None
) -> None:
    """The tune report's report.json and command.txt (its curves are written through curve_files)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / REPORT_INFO,
        {
            "format_version": REPORT_VERSION,
            "entry": entry.name,
            "cache_key": entry.key,
            "metric": metric,
            "selection": selection,
            "run_ids": run_ids,
        },
    )
    _write_command(folder, command)


def read_tune_report(folder) -> TuneReport:
    """Read a tune report folder (<reports>/tune-<id>/) written by write_tune_report and curve_files."""
    folder = Path(folder)
    curves = {p.name[: -len(f"{CURVE}.csv")]: p for p in sorted(folder.glob(f"*{CURVE}.csv"))}
    if not curves:
        raise FeatxError(f"{folder} holds no search curve; pass a tune-<id> folder that `featx tune` wrote")
    info = _read_info(folder)
    return TuneReport(
        folder,
        {
            clf: (pd.read_csv(path), path.with_suffix(".png") if path.with_suffix(".png").is_file() else None)
            for clf, path in curves.items()
        },
        info.get("metric"),
        info.get("selection"),
        info.get("run_ids", {}),
        info.get("entry"),
        _read_command(folder),
    )


# --- pipeline


@dataclass
class PipelineReport:
    """A pipeline report folder's report.json as read back (read_pipeline_report)."""

    folder: Path
    name: str
    command: str
    run_ids: list
    plots: list  # PNG paths


def write_pipeline_report(folder: Path, *, name: str, command: str, run_ids: list, plots) -> None:
    """The pipeline report's report.json: what `featx report` renders the page of a `featx run` from again."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / REPORT_INFO,
        {
            "format_version": REPORT_VERSION,
            "name": name,
            "command": command,
            "run_ids": list(run_ids),
            "plots": [str(p) for p in plots],
        },
    )


def read_pipeline_report(folder) -> PipelineReport:
    folder = Path(folder)
    info = _read_info(folder, required=True)
    return PipelineReport(folder, info["name"], info["command"], list(info["run_ids"]), list(info["plots"]))


# --- finding reports


def report_kind(folder: Path) -> str | None:
    """'compare', 'tune' or 'pipeline' for a report folder featx wrote; None for any other folder."""
    name = folder.resolve().name
    if name.startswith("pipeline-") and (folder / REPORT_INFO).is_file():
        return "pipeline"
    if name.startswith("compare-") or (folder / RESULTS_CSV).is_file():
        return "compare"
    if name.startswith("tune-") or any(folder.glob(f"*{CURVE}.csv")):
        return "tune"
    return None


def newest_report(cache) -> Path:
    """The most recent compare or tune report folder of `cache`; one line when there is none."""
    folders = [p for kind in ("compare", "tune") for p in cache.reports_dir.glob(f"{kind}-*") if p.is_dir()]
    if not folders:
        raise FeatxError(
            f"no compare or tune report in {cache.reports_dir}; run `featx compare` or `featx tune`, "
            "or name run ids: featx report RUN_ID ..."
        )
    return max(folders, key=lambda p: p.name.split("-", 1)[1])  # compare-<time>-<hex>: sortable by time
