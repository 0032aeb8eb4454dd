"""`featx report`: one self-contained HTML file per experiment, to open, read offline and share.

Images are inlined as base64 data URIs and the style sheet is inline; the page needs no JavaScript and no
network. What it shows is read through the owners of each file: compare and tune report folders
(featx.runs.reports), the runs log (featx.runs.store.read_log), run folders (featx.runs.record.run_files) and
t-SNE plots (featx.experiments.tsne.tsne_plots); this module never parses their formats itself. Rows are ranked by
featx.runs.ranking, the same rule as every table of runs.
"""

from __future__ import annotations

import base64
import html
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from featx.cache.store import Cache
from featx.errors import FeatxError
from featx.runs.folders import new_run_id
from featx.runs.reports import (
    compare_reports,
    newest_report,
    read_compare_report,
    read_pipeline_report,
    read_tune_report,
    report_kind,
    report_runs,
)
from featx.runs.store import find_run

REPORT_FILE = "report.html"
MAX_LEARNING_CURVES = 6

STYLE = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.4;padding:0 1em;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#555}.box{background:#eef6ee;border-left:5px solid #3a8a3a;padding:.6em 1em;margin:1em 0}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.baseline td{color:#777;font-style:italic;background:#fafafa}tr.selected td{background:#eef6ee;font-weight:bold}
.tag{font-size:.75em;border:1px solid #999;border-radius:3px;padding:0 .3em;margin-left:.3em;font-style:normal}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figure img{max-width:100%;height:auto;
border:1px solid #eee}figcaption{font-size:.85em;color:#555}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
.note{color:#555;font-size:.9em}
"""


@dataclass
class Page:
    """What one report shows; render() turns it into HTML."""

    title: str
    cache: Cache
    run_ids: list = field(default_factory=list)  # the runs ranked in the table
    metric: str | None = None  # None: chosen from the entry's class balance
    figures: list = field(default_factory=list)  # (section, caption, PNG path)
    tables: list = field(default_factory=list)  # (heading, DataFrame) shown as they are
    commands: list = field(default_factory=list)


def report(sources=(), *, cache=None, output=None, metric: str | None = None) -> Path:
    """Write one HTML report; returns its path.

    cache : a Cache (its runs_dir included) or a cache folder (None: the default one).
    sources : compare-<id>, tune-<id> or pipeline-<name>-<id> folders (or their names under the reports folder) and
        run ids (whole, unique prefixes or short ids); none: the most recent compare or tune report. Several
        sources make one page.
    output : the HTML file (default: report.html in the one compare/tune folder, else
        <reports>/runs-<id>/report.html). metric : rank by this metric instead of the entry's default.
    """
    cache = Cache.resolve(cache)
    sources = [str(s) for s in sources] or [str(newest_report(cache))]
    page = Page("featx report", cache, metric=metric)
    folders = []
    for source in sources:
        kind, folder = _folder(cache, source)
        if kind == "compare":
            _add_compare(page, read_compare_report(folder))
        elif kind == "tune":
            _add_tune(page, read_tune_report(folder))
        elif kind == "pipeline":
            _add_pipeline(page, folder)
        else:
            page.run_ids.append(str(find_run(source, cache).run_id))
            continue
        folders.append(folder)
    if len(sources) == 1 and folders:
        page.title = f"featx report: {folders[0].name}"
    elif not folders:
        page.title = f"featx report: {len(page.run_ids)} run(s)"
    path = (
        Path(output)
        if output
        else (folders[0] if len(folders) == 1 else cache.reports_dir / f"runs-{new_run_id()}") / REPORT_FILE
    )
    return write(page, path)


def pipeline_page(folder, *, cache=None) -> Path:
    """The page of a pipeline run (featx run) from its report folder: its runs ranked, the layer comparison of each
    compare step whose folder holds these runs, confusion matrices, learning curves, t-SNE and the command; written
    as report.html in that folder."""
    found = read_pipeline_report(folder)
    page = Page(f"featx pipeline: {found.name}", Cache.resolve(cache), run_ids=list(dict.fromkeys(found.run_ids)))
    page.commands.append(found.command)
    _add_pipeline_figures(page, found.plots)
    return write(page, found.folder / REPORT_FILE)


def _add_pipeline_figures(page: Page, plots) -> None:
    """The layer comparison of each compare report made of the page's runs, and the pipeline's t-SNE plots."""
    wanted = set(page.run_ids)
    for folder in reversed(compare_reports(page.cache)):  # newest first
        if not wanted:
            break
        if report_kind(folder) == "compare" and report_runs(folder) != {""}:
            found = read_compare_report(folder)
            if set(found.table["run_id"].dropna()) <= wanted and found.plot is not None:
                page.figures.append(("Layer comparison", f"{found.folder.name}: {found.best_line or ''}", found.plot))
                wanted -= set(found.table["run_id"])
    page.figures += [
        ("t-SNE", Path(p).name, Path(p)) for p in plots if Path(p).name.startswith("tsne-") and Path(p).is_file()
    ]


def _add_pipeline(page: Page, folder: Path) -> None:
    found = read_pipeline_report(folder)
    page.run_ids += found.run_ids
    page.commands.append(found.command)
    _add_pipeline_figures(page, found.plots)


def write(page: Page, path: Path) -> Path:
    """Render `page` into `path` (written whole, atomically)."""
    from featx.cache.atomic import atomic_path

    path = Path(path)
    text = render(page)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FeatxError(
            f"cannot write report {path} ({exc.strerror or exc}); pass -o naming a writable file"
        ) from None
    return path


def _folder(cache: Cache, source: str) -> tuple[str, Path | None]:
    """('compare' | 'tune' | 'pipeline', folder) for a report folder or its name; ('run', None) for anything else."""
    path = Path(source)
    for candidate in (path, cache.reports_dir / source):
        if candidate.is_dir():
            kind = report_kind(candidate)
            if kind is not None:
                return kind, candidate
            raise FeatxError(
                f"{source} is not a compare-<id>, tune-<id> or pipeline-<name>-<id> report folder; "
                "pass one of those or run ids"
            )
    if source.startswith(("compare-", "tune-", "pipeline-")) or "/" in source:
        raise FeatxError(
            f"report folder '{source}' not found (looked in {cache.reports_dir}); see the paths "
            "`featx compare` and `featx tune` print"
        )
    return "run", None


def _add_compare(page: Page, found) -> None:
    page.run_ids += [str(r) for r in found.table["run_id"].dropna()]
    page.metric = page.metric or found.metric
    if found.plot is not None:
        page.figures.append(("Layer comparison", f"{found.folder.name}: {found.best_line or ''}", found.plot))
    page.commands.append(
        found.command or f"(the command of {found.folder.name} was not recorded: it predates command.txt)"
    )


def _add_tune(page: Page, found) -> None:
    page.run_ids += [str(r) for r in found.run_ids.values() if r]
    page.metric = page.metric or found.metric
    for clf, (curve, png) in found.curves.items():
        if png is not None:
            page.figures.append(("Tune search curve", f"{clf}: {found.metric} on {found.selection}", png))
        metric = found.metric if found.metric in curve.columns else None
        shown = curve.sort_values(metric, ascending=False, kind="stable") if metric else curve
        page.tables.append(
            (
                f"Tune search, {clf}: the best points by {metric or 'search order'} "
                f"(8 of {len(curve)} tried; selected on {found.selection})",
                shown.head(8),
            )
        )
    page.commands.append(
        found.command or f"(the command of {found.folder.name} was not recorded: it predates command.txt)"
    )


# --- rendering


def render(page: Page) -> str:
    """The whole HTML document of `page` (images inlined)."""
    from featx.runs.ranking import entry_metric, model_name, protocol_label, rank, recommendation_line, recommended
    from featx.runs.record import fit_command, run_files
    from featx.runs.store import read_log

    log = read_log(page.cache)
    rows = log[log["run_id"].isin(page.run_ids)]
    missing = sorted(set(page.run_ids) - set(rows["run_id"]))
    body = [f"<h1>{_e(page.title)}</h1>"]
    keys = list(dict.fromkeys(rows["cache_key"].astype(str)))
    reason = ""
    if page.metric is None:
        page.metric, reason = entry_metric(page.cache, keys[0]) if keys else ("accuracy", "")
    body.append(_source_lines(page.cache, rows))
    ranking = rank(rows, page.metric)
    ranked, best = ranking.table, recommended(ranking)
    body.append(
        f'<div class="box"><b>{_e(recommendation_line(ranking)).replace(chr(10), "<br>")}</b>'
        f'<p class="note">{_e(reason + "; " if reason else "")}{_e(ranking.note)}. Baseline rows '
        "(majority, stratified) ignore the features: a model worth using beats them clearly.</p></div>"
    )
    body.append("<h2>Ranking</h2>")
    for protocol, group in ranked.groupby("selected_by", sort=False):
        body.append(f"<h3>Scored by {_e(protocol_label(protocol))} ({len(group)} run(s))</h3>")
        body.append(_ranking_table(group, page.metric, best, len(keys) > 1))
    if missing:
        body.append(f'<p class="note">not in the runs log (removed?): {_e(", ".join(missing))}</p>')
    for heading, table in page.tables:
        body.append(f"<h2>{_e(heading)}</h2>" + _plain_table(table))
    figures = list(page.figures)
    with tempfile.TemporaryDirectory(prefix="featx-report-") as scratch:
        if best is not None:
            figures += _confusions(
                run_files(page.cache.runs_dir, best["run_id"]), best, Path(scratch), model_name(best)
            )
        dense = [
            (r, files)
            for _, r in ranked.iterrows()
            if (files := run_files(page.cache.runs_dir, r["run_id"])).history is not None
        ][:MAX_LEARNING_CURVES]
        for r, files in dense:
            figures.append(
                (
                    "Learning curves (dense heads)",
                    f"{model_name(r)} (run {r['run_id']})",
                    _learning_png(files, Path(scratch)),
                )
            )
        if not any(section == "t-SNE" for section, _, _ in figures):
            figures += _tsne(page.cache, keys)
        sections = list(dict.fromkeys(section for section, _, _ in figures))
        for section in sections:
            body.append(f"<h2>{_e(section)}</h2>")
            body += [_figure(caption, png) for s, caption, png in figures if s == section]
    body.append("<h2>Reproduce</h2>")
    commands = list(page.commands)
    if best is not None and not commands:
        commands.append(fit_command(best) + "   # the recommended model, fitted again")
    body.append("<pre>" + _e("\n".join(commands) or "(no command recorded)") + "</pre>")
    if best is not None and page.commands:
        body.append("<p class='note'>The recommended model alone:</p><pre>" + _e(fit_command(best)) + "</pre>")
    body.append(
        f'<p class="note">written {time.strftime("%Y-%m-%d %H:%M:%S")} by featx; self-contained: images '
        "inlined, no scripts, no network.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
        + _e(page.title)
        + f"</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _source_lines(cache: Cache, rows: pd.DataFrame) -> str:
    """The data and backbone of the runs, once (one line per entry)."""
    from featx.cache.pick import data_labels, key_data_label

    labels = data_labels(cache)
    lines = []
    for key, group in rows.groupby(rows["cache_key"].astype(str), sort=False):
        data = key_data_label(key, labels, missing="(entry no longer in this cache)")
        lines.append(
            f"<b>data</b>: {_e(data)} &nbsp; <b>backbone</b>: {_e(group['backbone'].iloc[0])} &nbsp; "
            f"<b>entry</b>: {_e(group['cache_entry'].iloc[0])}"
        )
    return '<p class="meta">' + ("<br>".join(lines) or "no runs") + "</p>"


def _ranking_table(group: pd.DataFrame, metric: str, best, several_entries: bool) -> str:
    head = [
        "#",
        "run",
        *(["entry"] if several_entries else []),
        "layers",
        "classifier",
        "params",
        "transforms",
        "features",
        f"{metric} (selection)",
        f"val {metric}",
        "val accuracy",
    ]
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for n, (_, r) in enumerate(group.iterrows(), 1):
        selected = best is not None and r["run_id"] == best["run_id"]
        klass = ' class="baseline"' if r["baseline"] else ' class="selected"' if selected else ""
        score = "" if pd.isna(r["selection_score"]) else f"{r['selection_score']:.3f}"
        if score and not pd.isna(r["selection_ci95"]):
            score += f" ± {r['selection_ci95']:.3f}"
        clf = _e(r["classifier"]) + ('<span class="tag">baseline</span>' if r["baseline"] else "")
        clf += '<span class="tag">recommended</span>' if selected else ""
        cells = [
            str(n),
            _e(r["run_id"]),
            *([_e(r["cache_entry"])] if several_entries else []),
            _e("(baseline: ignores the features)" if r["baseline"] else r["layers"]),
            clf,
            _e(r["params"]),
            _e(r["transforms"]),
            _num(r["n_features"], "{:.0f}"),
            score,
            _num(r.get(f"val_{metric}")),
            _num(r.get("val_accuracy")),
        ]
        numbers = len(cells) - 4  # features and the scores, right-aligned
        out.append(
            f"<tr{klass}>"
            + "".join(f'<td class="num">{c}</td>' if i >= numbers else f"<td>{c}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    return "\n".join(out) + "</table>"


def _plain_table(table: pd.DataFrame) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in table.columns) + "</tr>"]
    for _, r in table.iterrows():
        out.append(
            "<tr>"
            + "".join(f'<td class="num">{_num(v)}</td>' if isinstance(v, float) else f"<td>{_e(v)}</td>" for v in r)
            + "</tr>"
        )
    return "\n".join(out) + "</table>"


def _confusions(files, row, scratch: Path, name: str) -> list:
    """Val and test confusion matrices of the recommended run, drawn here when the run folder has no PNG."""
    from featx.figures.plots import plot_confusion

    figures = []
    for split, matrix in files.confusion.items():
        png = files.confusion_png.get(split) or plot_confusion(
            matrix, scratch / f"confusion_{split}.png", f"{row['classifier']} ({split})"
        )
        figures.append(("Confusion matrices of the recommended model", f"{split}: {name} (run {row['run_id']})", png))
    return figures


def _learning_png(files, scratch: Path) -> Path:
    from featx.figures.plots import plot_learning_curves

    return files.learning_png or plot_learning_curves(files.history, scratch / f"learning-{files.folder.name}.png")


def _tsne(cache: Cache, keys: list[str]) -> list:
    from featx.experiments.tsne import tsne_plots

    figures = []
    for key in keys:
        try:
            entry = cache.open(key.split("+")[0])
        except FeatxError:
            continue
        figures += [("t-SNE", p.name, p) for p in tsne_plots(entry)[:2]]
    return figures


def _figure(caption: str, png) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _num(value, fmt: str = "{:.3f}") -> str:
    try:
        return "" if value is None or pd.isna(value) else fmt.format(float(value))
    except (TypeError, ValueError):
        return _e(value)


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)
