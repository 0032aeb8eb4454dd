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

The whole file is checked against one schema (featx.experiments.pipeline_schema: size, UTF-8, nesting, every key's
type and range, the steps' shape) and every step's FitSpecs and Evaluation are built before anything runs: the first
problem is one line naming the key and what it accepts. A file may come from someone else, so it can never allow
code to run: `unsafe` (loading a saved model's Lambda layers) is refused in it, and exists only as the command-line
flag (`featx run FILE --unsafe`, API: unsafe=True).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from featx.backbones import DEFAULT_BACKBONE
from featx.backbones.spec import BackboneSpec
from featx.cache.store import Cache, CacheEntry
from featx.compute import Compute
from featx.errors import FeatxError
from featx.experiments.compare import compare, expand_subsets
from featx.experiments.fit import fit
from featx.experiments.inputs import tail_specs
from featx.experiments.pipeline_schema import MAX_BYTES, parse_pipeline
from featx.experiments.tsne import tsne, tsne_path
from featx.extractor import extract
from featx.features.load import select_cached
from featx.progress import silent
from featx.runs.ranking import Ranking, entry_metric, format_ranked, rank, recommendation_line, source_line
from featx.runs.reports import new_report_folder, write_pipeline_report
from featx.runs.reuse import logged_runs
from featx.runs.store import read_log, split_fingerprint
from featx.selection.spec import Evaluation, FitSpec, baseline_specs, compare_specs, fit_spec
from featx.sources.spec import DataSpec
from featx.sources.views import parse_views

# How the [extract] table's keys (featx.experiments.pipeline_schema.SCHEMA["extract"]) make the extraction's values
EXTRACT_DATA = ("split", "seed", "limit", "strict")  # the DataSpec's
EXTRACT_BACKBONE = ("pool", "dtype", "input_size", "preprocess", "mixed_precision")  # the BackboneSpec's
EXTRACT_COMPUTE = ("batch_size", "cluster", "cluster_config", "cluster_timeout")  # the Compute's
STEPS = ("fit", "compare", "tsne")  # the step kinds (pipeline_schema.SCHEMA has each one's keys)
VIEW_STEPS = ("fit", "compare")  # the steps that train on augmented views
TSNE_LAYERS = "top_activation"  # a tsne step's layers unless it names some (as `featx plot-tsne`)
EXTRACT_LAYERS = "blocks"  # the pipeline's layers unless it names some (as `featx extract`)
COMPARE_LAYER_SETS = ("blocks",)  # a compare step's layer_sets unless it names some


@dataclass
class PipelineResult:
    entry: CacheEntry
    ranking: Ranking  # the runs of this pipeline, ranked (featx.runs.ranking.rank), with its metric and note
    plots: list[Path]
    folder: Path | None = None  # the pipeline's report folder (report.json; `featx report` renders its page)
    recommended: str = ""  # the closing line: the one recommended model and why

    @property
    def table(self) -> pd.DataFrame:
        """The ranked runs (ranking.table)."""
        return self.ranking.table


def read_pipeline(path) -> dict:
    """Read a pipeline file and check it against the schema (featx.experiments.pipeline_schema); returns its
    contents as a dict. Reads at most MAX_BYTES + 1 bytes: a larger file is refused, not read whole."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise FeatxError(f"cannot read pipeline '{path}': {exc.strerror}") from None
    return parse_pipeline(data, path)


def run_pipeline(
    path, *, data=None, backbone=None, refit: bool = False, unsafe: bool = False, cache=None, log=print
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
    one recommended model. cache : a Cache or a cache folder (None: the default one). The runs, plots and command
    are kept in <reports>/pipeline-<name>-<id>/report.json (PipelineResult.folder), from which featx.report
    renders the page (`featx run` does, and prints its path last). unsafe : allow Lambda layers when the extract
    step loads a saved .keras model (runs its code); a pipeline file cannot ask for it, only the caller (`featx run
    FILE --unsafe`).
    """
    log, cache = log or silent, Cache.resolve(cache)
    spec = read_pipeline(path)
    if data is not None:
        spec["data"] = data
    elif "data" not in spec:
        raise FeatxError(f"pipeline '{path}' names no data; add data = \"...\" to it or pass --data")
    if backbone is not None:
        spec["backbone"] = backbone
    layers = spec.get("layers", EXTRACT_LAYERS)
    views = {k: spec[k] for k in ("views", "view_seed") if k in spec}  # the steps' default views
    check_steps(spec, path)
    needed = _needed_views(spec["steps"], views)
    options = spec.get("extract", {})
    default_pool = options.get("pool", BackboneSpec.pool)
    entries = {}  # pool -> the entry its steps run on: the [extract] pool's first, then each step's own
    for pool in dict.fromkeys([default_pool, *(step["pool"] for step in spec["steps"] if "pool" in step)]):
        entries[pool] = extract(
            DataSpec(spec["data"], **{k: options[k] for k in EXTRACT_DATA if k in options}),
            BackboneSpec(
                spec.get("backbone", DEFAULT_BACKBONE),
                **({"weights": spec["weights"]} if "weights" in spec else {}),
                **{k: options[k] for k in EXTRACT_BACKBONE if k in options and k != "pool"},
                pool=pool,
                unsafe=unsafe,  # the caller's alone: the schema refuses it in a file
            ),
            layers,
            views=",".join(needed[1:]) if len(needed) > 1 else None,
            cache=cache,
            compute=Compute(**{k: options[k] for k in EXTRACT_COMPUTE if k in options}),
            log=log,
        ).entry
    entry = entries[default_pool]
    run_ids, plots = [], []
    metric, reason = entry_metric(entry.cache, entry.key)
    log(reason)
    for number, step in enumerate(spec["steps"], 1):
        kind, options = step["kind"], _options(step)
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
            result = fit(entry, run["layers"], specs[0], evaluation, log=log)
            run_ids.append(result.run_id)
            plots += sorted(result.folder.glob("*.png"))
        elif kind == "compare":
            result = compare(
                entry,
                run.get("layer_sets", COMPARE_LAYER_SETS),
                specs,
                evaluation,
                save_models=run.get("save_models", "best"),
                plots=run.get("plots", False),
                compute=Compute(
                    workers=run.get("n_jobs", -1),
                    **{k: run[k] for k in ("cluster", "cluster_config", "cluster_timeout", "reuse") if k in run},
                ),
                log=log,
            )
            run_ids += list(result.table["run_id"])
            plots.append(result.plot)
        elif not refit and (done := tsne_path(entry, **{"layers": TSNE_LAYERS, **options})).exists():
            log(f"reused {done} (`featx run --refit` draws it again)")
            plots.append(done)
        else:
            plots.append(tsne(entry, options.pop("layers", TSNE_LAYERS), log=log, **options))
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
    folder = new_report_folder(entry.cache, "pipeline", name)
    write_pipeline_report(folder, name=name, command=command, run_ids=list(table["run_id"]), plots=plots)
    return PipelineResult(entry, ranking, plots, folder, closing)


def check_steps(spec: dict, path) -> None:
    """Build every fit and compare step's FitSpecs and Evaluation from read_pipeline(path)'s dict `spec`, so they
    are checked (classifier names, scikit-learn's constraints and featx's bounds on their parameters, the views)
    before anything runs; a problem is one line naming the step."""
    views = {k: spec[k] for k in ("views", "view_seed") if k in spec}
    layers = spec.get("layers", EXTRACT_LAYERS)
    for number, step in enumerate(spec["steps"], 1):
        kind, options = step["kind"], _with_views(_options(step), views)
        try:
            if kind == "fit":
                _step_values("fit", {"layers": layers, **options})
            elif kind == "compare":
                _step_values("compare", options)
        except FeatxError as exc:
            raise type(exc)(f"step {number} ({kind}) of '{path}': {exc}") from None


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
    table by the builders `featx fit` and `featx compare` use (fit_spec, compare_specs): a step makes the runs that the
    same values or flags make, with the same spec_hash."""
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
    layer_sets = run.get("layer_sets", COMPARE_LAYER_SETS)
    subsets = expand_subsets(entry, [layer_sets] if isinstance(layer_sets, str) else layer_sets)
    return [(list(selection.names), spec) for selection, _ in subsets for spec in specs] + [
        (list(subsets[0][0].names), spec) for spec in baseline_specs(specs)
    ]  # compare's baseline rows


def _options(step: dict) -> dict:
    """A step's keywords: its table without `kind` and `pool` (which picks the entry it runs on)."""
    return {k: v for k, v in step.items() if k not in ("kind", "pool")}
