"""Declarative experiment files (TOML): extract once (a no-op when cached), then fit / compare / t-SNE steps.

    name = "quickstart"                     # optional, with description
    data = "elpv"                           # top level: what featx.extract needs to find the cache entry
                                            # (`featx run FILE --data SRC` runs the recipe on another source)
    backbone = "efficientnet_lite0"
    weights = "imagenet"
    layers = ["blocks", "top_activation"]
    views = "flip"                          # optional: augmented views extracted, and trained on by every fit and
    view_seed = 0                           # compare step that sets no views of its own (views = "id": plain)
    [extract]                               # any other featx.extract keyword: limit, seed, split, pool, ...
    limit = 600
    [[steps]]                               # in order; kind = fit | compare | tsne, the rest are its keywords
    kind = "fit"
    clf = "rf"
    params = { n_estimators = 200 }
    tta = true                              # any fit / compare keyword, e.g. tta: average over the views
    pool = "cls"                            # optional: this step's features pooled otherwise (another entry of the
                                            # same images, extracted too); default the [extract] pool

The whole file is checked before anything runs: an unknown key is an error naming the key and the file.
"""

from __future__ import annotations

import inspect
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from featx.cache.store import CacheEntry
from featx.errors import FeatxError
from featx.experiments.compare import _expand_subsets, compare, compare_run
from featx.experiments.fit import fit, fit_run
from featx.experiments.ranking import Ranking, entry_metric, format_ranked, rank, recommendation_line, source_line
from featx.experiments.reuse import logged_runs
from featx.experiments.runlog import read_log, split_fingerprint
from featx.experiments.spec import Evaluation, FitSpec, baseline_specs, compare_specs, fit_spec
from featx.experiments.tail import tail_specs
from featx.experiments.tsne import tsne, tsne_path
from featx.extractor import extract
from featx.features.load import select_cached
from featx.features.options import TRANSFORM_KEYS
from featx.sources.views import parse_views

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STEPS = {"fit": fit, "compare": compare, "tsne": tsne}
VIEW_STEPS = ("fit", "compare")  # the steps that train on augmented views
TSNE_LAYERS = inspect.signature(tsne).parameters["layers"].default
TOP_LEVEL = ("name", "description", "data", "backbone", "weights", "layers", "views", "view_seed", "extract", "steps")
MANAGED = (
    "cache",
    "cache_dir",
    "log",
    "progress",
    "runs_dir",
    "on_event",
    "refit",
    "command",
)  # set by run_pipeline or code, not by a file


@dataclass
class PipelineResult:
    entry: CacheEntry
    ranking: Ranking  # the runs of this pipeline, ranked (featx.experiments.ranking.rank), with its metric and note
    plots: list[Path]
    report: Path | None = None  # the HTML report (featx.reports.html.pipeline_report)
    recommended: str = ""  # the closing line: the one recommended model and why

    @property
    def table(self) -> pd.DataFrame:
        """The ranked runs (ranking.table)."""
        return self.ranking.table


def read_pipeline(path) -> dict:
    """Parse and check a pipeline file; returns its contents as a dict."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FeatxError(f"cannot read pipeline '{path}': {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FeatxError(f"pipeline '{path}' is not valid TOML: {exc}") from None
    _check_keys(spec, TOP_LEVEL, f"pipeline '{path}'")
    _check_keys(spec.get("extract", {}), _keywords(extract, TOP_LEVEL), f"[extract] of '{path}'")
    steps = spec.get("steps", [])
    if not isinstance(steps, list) or not steps:
        raise FeatxError(f"pipeline '{path}' has no [[steps]]; add at least one with kind = {' | '.join(STEPS)}")
    for number, step in enumerate(steps, 1):
        kind = step.get("kind")
        if kind not in STEPS:
            raise FeatxError(f"step {number} of '{path}' has kind {kind!r}; choose one of {', '.join(STEPS)}")
        _check_keys(step, ("kind", "pool", *_keywords(STEPS[kind])), f"step {number} ({kind}) of '{path}'")
    return spec


def run_pipeline(
    path, *, data=None, backbone=None, cache_dir=None, refit: bool = False, log=print, report: bool = True
) -> PipelineResult:
    """Extract (reusing the cache), run the steps in order, then print the runs made, best first, and the plots.

    A fit step without `layers` uses the pipeline's layers. data : run the same recipe on another data
    source (a folder, CSV manifest or built-in name) instead of the file's `data`; backbone : with another backbone
    than the file's (a recipe naming layer groups, not layers, runs on any). A step with its own `pool` runs on the
    entry of those images extracted with that pooling (extracted too). A fit or compare step whose
    every fit is already in the runs log (same entry, layers and FitSpec) reuses those runs instead of
    appending duplicates, and a t-SNE step whose plot exists reuses it; refit : fit and draw them again anyway.
    The ranking metric is chosen once, from the entry's class balance (printed), for every compare step that names
    none and for the closing table, which ranks the runs within each protocol (val, K-fold CV) and ends with the
    one recommended model. report : write <reports>/pipeline-<name>-<id>/report.html (its path is the last line).
    """
    log = log or (lambda *_: None)
    spec = read_pipeline(path)
    if data is not None:
        spec["data"] = data
    elif "data" not in spec:
        raise FeatxError(f"pipeline '{path}' names no data; add data = \"...\" to it or pass --data")
    if backbone is not None:
        spec["backbone"] = backbone
    source = {k: spec[k] for k in ("data", "backbone", "weights", "layers") if k in spec}
    layers = source.setdefault("layers", inspect.signature(extract).parameters["layers"].default)
    views = {k: spec[k] for k in ("views", "view_seed") if k in spec}  # the steps' default views
    needed = _needed_views(spec["steps"], views)
    options = spec.get("extract", {})
    default_pool = options.get("pool", inspect.signature(extract).parameters["pool"].default)
    entries = {}  # pool -> the entry its steps run on: the [extract] pool's first, then each step's own
    for pool in dict.fromkeys([default_pool, *(step["pool"] for step in spec["steps"] if "pool" in step)]):
        entries[pool] = extract(
            cache_dir=cache_dir,
            log=log,
            **source,
            **{**options, "pool": pool},
            **({"views": ",".join(needed[1:])} if len(needed) > 1 else {}),
        ).entry
    entry = entries[default_pool]
    run_ids, plots = [], []
    metric, reason = entry_metric(entry.cache, entry.key)
    log(reason)
    for number, step in enumerate(spec["steps"], 1):
        kind, options = step["kind"], {k: v for k, v in step.items() if k not in ("kind", "pool")}
        entry = entries[step.get("pool", default_pool)]
        log(f"--- step {number}/{len(spec['steps'])}: {kind}" + (f" (pool {step['pool']})" if "pool" in step else ""))
        if kind in VIEW_STEPS:
            options = _with_views(options, views)
        if kind == "compare":
            options = {"metric": metric, **options}  # chosen (and printed) once, above
        if kind == "fit":
            options = {"layers": layers, **options}
        if kind in VIEW_STEPS:  # the step's FitSpecs and Evaluation, built once: reused runs are matched on them
            specs, evaluation, run = _step_values(kind, options)
        reused = (
            None
            if refit or kind == "tsne"
            else logged_runs(
                read_log(entry.cache),
                entry.key,
                _step_jobs(entry, kind, specs, run),
                evaluation,
                split=split_fingerprint(entry),
            )
        )
        if reused is not None:
            log(
                f"reused {len(reused)} logged run(s) with the same entry, split, layers and spec hash (classifier, "
                f"parameters, transforms, views, seed, cv) (`featx run --refit` fits them again)"
            )
            run_ids += reused
        elif kind == "fit":
            result = fit_run(entry, specs[0], evaluation, log=log, **run)
            run_ids.append(result.run_id)
            plots += sorted(result.folder.glob("*.png"))
        elif kind == "compare":
            result = compare_run(entry, specs, evaluation, log=log, **run)
            run_ids += list(result.table["run_id"])
            plots.append(result.plot)
        elif not refit and (done := tsne_path(entry, **{"layers": TSNE_LAYERS, **options})).exists():
            log(f"reused {done} (`featx run --refit` draws it again)")
            plots.append(done)
        else:
            plots.append(tsne(cache=entry, log=log, **options))
    entry = entries[default_pool]
    log_table = read_log(entry.cache)
    ranking = rank(log_table[log_table["run_id"].isin(run_ids)], metric)
    table = ranking.table
    name = spec.get("name", Path(path).stem)
    log(f"=== {name}: {len(table)} run(s), ranked by {metric}")
    log(source_line(table, {e.key: e.data_label for e in entries.values()}))
    log(format_ranked(ranking))
    log("plots:\n" + "\n".join(f"  {p}" for p in plots))
    closing = recommendation_line(ranking)
    log(closing)
    html = None
    if report:
        from featx.experiments.runfolders import new_run_id
        from featx.reports.html import pipeline_report

        command = shlex.join(
            [
                "featx",
                "run",
                str(path),
                *(["--data", str(data)] if data is not None else []),
                *(["--backbone", str(backbone)] if backbone is not None else []),
                "--cache-dir",
                str(entry.cache.root),
            ]
        )
        html = pipeline_report(
            entry.cache,
            list(table["run_id"]),
            name=name,
            command=command,
            plots=plots,
            output=entry.cache.reports_dir / f"pipeline-{_safe(name)}-{new_run_id()}" / "report.html",
        )
        log(f"report: {html}")
    return PipelineResult(entry, ranking, plots, html, closing)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", str(name))[:60]


def _needed_views(steps: list[dict], views: dict) -> tuple[str, ...]:
    """Every view name the pipeline trains on: the top-level `views` and each fit or compare step's (identity
    first), which the extract step caches."""
    chosen = [_with_views(step, views) for step in steps if step["kind"] in VIEW_STEPS]
    names = [parse_views(views.get("views"), views.get("view_seed", 0))]
    names += [parse_views(step.get("views"), step.get("view_seed", 0)) for step in chosen]
    return tuple(dict.fromkeys(name for group in names for name in group))


def _with_views(step: dict, views: dict) -> dict:
    """A fit or compare step's options with the top-level views and view_seed where it sets none of its own
    (a step naming views but no seed takes the top-level seed, as extract did)."""
    return (
        {**views, **step} if "views" not in step else {**{k: v for k, v in views.items() if k == "view_seed"}, **step}
    )


EVALUATION_KEYS = ("cv", "cv_repeats", "metric", "seed", "search")  # a step's keys that make its Evaluation
COMPARE_RUN = (
    "layer_sets",
    "grid",
    "n_jobs",
    "plots",
    "cluster",
    "cluster_config",
    "cluster_timeout",
    "save_models",
    "reuse",
)  # a compare step's keys that say how it runs (grid also makes its FitSpecs)


def _step_values(kind: str, options: dict) -> tuple[list[FitSpec], Evaluation, dict]:
    """A fit or compare step's FitSpecs, its Evaluation and the rest of its options (how it runs), built once from its
    table by the builders featx.fit and featx.compare use: a step makes the runs that the same API call or `featx
    fit` / `featx compare` flags make, with the same spec_hash."""
    evaluation = Evaluation(**{k: options[k] for k in EVALUATION_KEYS if k in options})
    if kind == "fit":
        return (
            [fit_spec(**{k: v for k, v in options.items() if k not in ("layers", "cv", "cv_repeats")})],
            evaluation,
            {"layers": options["layers"]},
        )
    run = {k: options[k] for k in COMPARE_RUN if k in options}
    spec_options = {k: v for k, v in options.items() if k == "grid" or k not in (*COMPARE_RUN, *EVALUATION_KEYS)}
    return compare_specs(**spec_options, **({"seed": options["seed"]} if "seed" in options else {})), evaluation, run


def _step_jobs(entry: CacheEntry, kind: str, specs: list[FitSpec], run: dict) -> list[tuple[list[str], FitSpec]]:
    """(layer names, FitSpec) of every fit a fit or compare step makes with `specs` (compare's baseline rows too)."""
    if kind == "fit":
        specs, layers = tail_specs(entry, specs, run["layers"])  # as fit completes a tail's params
        return [(list(select_cached(entry, layers).names), specs[0])]
    specs, _ = tail_specs(entry, specs)
    layer_sets = run.get("layer_sets", inspect.signature(compare_run).parameters["layer_sets"].default)
    subsets = _expand_subsets(entry, [layer_sets] if isinstance(layer_sets, str) else layer_sets)
    return [(list(selection.names), spec) for selection, _ in subsets for spec in specs] + [
        (list(subsets[0][0].names), spec) for spec in baseline_specs(specs)
    ]  # compare's baseline rows


def _keywords(function, exclude=()) -> tuple[str, ...]:
    """The keywords a file may set for `function` (its **transforms, if any, are the transform options)."""
    parameters = inspect.signature(function).parameters.values()
    names = [p.name for p in parameters if p.kind is not p.VAR_KEYWORD and p.name not in (*MANAGED, *exclude)]
    return (*names, *TRANSFORM_KEYS) if any(p.kind is p.VAR_KEYWORD for p in parameters) else tuple(names)


def _check_keys(table, allowed, where: str) -> None:
    if not isinstance(table, dict):
        raise FeatxError(f"{where} must be a table of key = value")
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise FeatxError(f"unknown key '{unknown[0]}' in {where}; allowed: {', '.join(allowed)}")
