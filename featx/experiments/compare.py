"""compare: layer subsets x classifiers x parameter grid in one command, every fit logged as a run.

The union of all requested layers is read from the cache once; each subset is a column slice of it
(meta.attrs["feature_slices"]), so a layer is never read twice however many subsets contain it.

Rows are ranked by one metric: the CV mean with `cv` (every row scored on the same seeded folds, so
differences are paired), else the val score; the baselines majority and stratified are scored the same
way, and the table ends with one line saying whether the best row beats the runner-up beyond noise.
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from featx.backbones.layers import LayerSelection
from featx.cache.pick import entry_label
from featx.cache.store import Cache
from featx.classifiers import BASELINES, classifier_params
from featx.classifiers.registry import large_n_note
from featx.distributed import joblib_backend
from featx.errors import FeatxError
from featx.experiments.fit import (
    FitSpec,
    _silent,
    cross_validate_spec,
    loaded_views,
    record_run,
    train_and_score,
    view_names,
    with_class_weight,
)
from featx.experiments.runs import new_run_id, prepare_log, writable_folder
from featx.experiments.selection import (
    METRICS,
    SELECTION_SPLITS,
    CVResult,
    check_metric,
    default_metric,
    make_folds,
    paired_difference,
    summarize,
    val_folds,
)
from featx.features.load import load, select_cached
from featx.reports.selection_plots import plot_layer_scores
from featx.values import params_dict, parse_grid_item

EACH = "each"
SAVE_MODELS = ("best", "all")
BASELINE_LAYERS = "(baseline)"  # the layers cell of a baseline row: it ignores the features
TABLE_COLUMNS = ("layers", "depth", "classifier", "params", "n_features", "val_accuracy", "val_f1_macro",
                 "test_accuracy", "test_f1_macro", "fit_seconds", "run_id")


@dataclass
class CompareResult:
    table: pd.DataFrame  # one row per (layer subset, classifier, params) and baseline, best first; TABLE_COLUMNS,
    #                      val/test_<metric>, and with cv cv_<metric>_mean/_ci95 for every METRICS name and cv_folds
    csv: Path
    plot: Path
    metric: str  # the ranking metric
    score: str  # the column ranked by: cv_<metric>_mean, or val_<metric>
    best_line: str  # "best: ...; <paired verdict against the runner-up>"


def compare(cache=None, *, layer_sets=("blocks",), classifiers=("rf",), grid: dict | None = None,
            params: dict | None = None, seed: int = 0, n_jobs: int = 1, metric: str | None = None,
            cv: int | None = None, cv_repeats: int = 1, class_weight: str | None = None, plots: bool = False,
            cache_dir=None, log=print, runs_dir=None, cluster=None, cluster_config=None, save_models: str = "best",
            views=None, view_seed: int = 0, tta: bool = False, **transforms) -> CompareResult:
    """Fit every (layer subset, classifier, grid point) and the baselines; tabulate them best first.

    layer_sets : subsets, each a layer name, group (all, blocks, final, fc), comma list of them, or "each" (every
        cached layer alone, with its depth index, for a per-depth accuracy curve).
    classifiers : names (or one comma string), e.g. "rf,svm,logreg".
    grid : {param: [values]}; params : fixed parameters. Each goes only to the classifiers that have
        that parameter (rf gets min_samples_leaf, logreg does not); one no classifier has is an error.
    n_jobs : fits run in parallel with joblib; with n_jobs=1 each classifier uses every core instead.
    cluster : run the fits on Dask workers (a featx.distributed spec such as "local:2", or a Client), the
        feature matrix sent to each worker once; cluster_config : its options. Results land where a local run puts them.
    metric : the ranking metric, a METRICS name (None: default_metric of the train+val labels, logged).
    cv : also score each row by repeated stratified K-fold (cv_repeats times) over train+val, on folds made
        once from `seed` (paired across rows), folds in parallel; rows are then ranked by the CV mean. Each
        row's model is still fitted on train and scored once on val and test, as without cv.
    class_weight : "balanced" for every classifier (each must have class_weight; baselines never get it).
    save_models : "best" (default) saves the model of the best row by the ranking score only (the first of
        equals), "all" every row's; rows without a model are logged all the same, with an empty model path.
    log : called with each message line and the table (default print); None prints nothing.
    plots : also draw each run's confusion PNGs (off: drawing them takes
        longer than most fits; the confusion CSVs are always written). transforms : as in fit.
    views, view_seed, tta : as in fit, for every row (the baselines too: the same protocol, one view's width).
    Every FitSpec is built (and so checked) before any data is read.
    Saves results.csv and layer_comparison.png in <cache_dir>/reports/compare-<id>/ (runs_dir : as in fit;
    then <runs_dir>/reports/compare-<id>/).
    """
    grid, log = grid or {}, log or _silent
    if save_models not in SAVE_MODELS:
        raise FeatxError(f"unknown --save-models '{save_models}'; choose one of {', '.join(SAVE_MODELS)}")
    names = [c.strip() for c in classifiers.split(",")] if isinstance(classifiers, str) else list(classifiers)
    if metric is not None:
        check_metric(metric)
    inner = -1 if n_jobs == 1 and cluster is None else 1  # the classifier's cores, or the folds' workers
    views = view_names(views, view_seed, tta)
    specs = fit_specs(names, grid, with_class_weight(params or {}, names, class_weight), transforms, seed, inner,
                      views=views, tta=tta)
    baselines = [FitSpec(classifier=b, seed=seed, n_jobs=inner, views=views, tta=tta) for b in BASELINES if b not in names]
    entry = Cache(cache_dir, runs_dir=runs_dir).open(cache)
    prepare_log(entry.cache)  # unwritable folders or a broken log fail before any fit
    reports = writable_folder(entry.cache.reports_dir, "reports")
    subsets = _expand_subsets(entry, [layer_sets] if isinstance(layer_sets, str) else layer_sets)
    jobs = [(subset, spec) for subset in subsets for spec in specs] + [((subsets[0][0], None), s) for s in baselines]
    X, y, meta = load(entry, layers=[n for selection, _ in subsets for n in selection.names],  # the union, once
                      views=loaded_views(specs[0]))
    split, slices, n_views = meta["split"].to_numpy(), meta.attrs["feature_slices"], len(specs[0].views)
    if metric is None:
        metric, reason = default_metric(y[np.isin(split, SELECTION_SPLITS)])
        log(reason)
    for note in filter(None, (large_n_note(name, int((split == "train").sum())) for name in names)):
        log(note)
    folds = make_folds(y, split, cv, cv_repeats, seed) if cv else None
    log(f"compare: {len(subsets)} layer subset(s) x classifiers x grid = {len(jobs)} fit(s), {n_jobs} in parallel, "
        f"on {entry_label(entry)}")
    columns = {selection: _view_columns([np.arange(*slices[n]) for n in selection.names], X.shape[1] // n_views, n_views)
               for selection, _ in subsets}
    backend = nullcontext() if cluster is None else joblib_backend(cluster, scatter=[X], config=cluster_config)
    with backend:
        scored = Parallel(n_jobs=n_jobs if cluster is None else -1)(
            delayed(_score_subset)(entry, X, columns[selection], y, split, spec, folds, inner)
            for (selection, _), spec in jobs)
    score = f"cv_{metric}_mean" if cv else f"val_{metric}"
    best = _best_model_row(scored, jobs, metric)
    fits = [(record_run(entry, spec, scores, selection=selection, log=log, plots=plots, cv=result,
                        keep_model=save_models == "all" or n == best), result)
            for n, (((selection, _), spec), (scores, result)) in enumerate(zip(jobs, scored))]
    table, results = _table(fits, jobs, grid, metric, score)
    best_line = _best_line(table, results, metric, score, split)
    folder = reports / f"compare-{new_run_id()}"
    folder.mkdir(parents=True)
    table.drop(columns="model").to_csv(folder / "results.csv", index=False)  # model = classifier + grid params
    plot = plot_layer_scores(table, folder / "layer_comparison.png", mean=score, ci=f"cv_{metric}_ci95" if cv else None,
                             hue="model", baselines=BASELINES,
                             title=f"{metric} by layer subset ({folds.label}, 95% CI)" if cv else f"{metric} on val")
    log(_format(table, metric, score))
    log(best_line)
    log(f"saved {folder / 'results.csv'} and {plot}")
    return CompareResult(table, folder / "results.csv", plot, metric, score, best_line)


def _table(fits, jobs, grid: dict, metric: str, score: str) -> tuple[pd.DataFrame, list]:
    """The rows, best first by `score` (stable: ties keep the run order), and their CV (or val) results."""
    extra = [f"{s}_{metric}" for s in ("val", "test") if f"{s}_{metric}" not in TABLE_COLUMNS]
    rows = []
    for (run, cv), ((_, depth), spec) in zip(fits, jobs):
        baseline = spec.classifier in BASELINES
        rows.append({**{k: run.row.get(k) for k in [*TABLE_COLUMNS, *extra] if k in run.row}, "depth": depth,
                     **{k: v for k, v in run.row.items() if k.startswith("cv_")},
                     "layers": BASELINE_LAYERS if baseline else run.row["layers"],
                     "model": " ".join([spec.classifier, *(f"{k}={spec.params[k]}" for k in grid if k in spec.params)])})
    table = pd.DataFrame(rows)
    table = table[[*TABLE_COLUMNS, *extra, *(c for c in table.columns if c.startswith("cv_")), "model"]]
    if table["depth"].isna().all():
        table = table.drop(columns="depth")
    order = table[score].astype(float).sort_values(ascending=False, kind="stable", na_position="last").index
    results = [cv if cv is not None else _val_result(run) for run, cv in fits]
    return table.loc[order].reset_index(drop=True), [results[i] for i in order]


def _val_result(run) -> CVResult | None:
    """A row's one val score as a one-split result, so the best-row line has one code path (and says that
    one split gives no CI)."""
    val = run.scores.metrics.get("val")
    if val is None:
        return None
    return CVResult(pd.DataFrame([{m: val[m] for m in METRICS}]), None, None)


def _best_line(table: pd.DataFrame, results: list, metric: str, score: str, split) -> str:
    if table[score].isna().all():
        return f"best: none ranked (no {score} score: the cache has no val rows; use --cv K)"
    name = [f"{m} on {_short(layers)}" for m, layers in zip(table["model"], table["layers"])]
    ci = table.get(f"cv_{metric}_ci95")
    best = f"best: {name[0]} {metric} {table[score].iloc[0]:.3f}" + (f" ± {ci.iloc[0]:.3f}" if ci is not None else "")
    if len(table) < 2 or results[0] is None or results[1] is None:
        return best
    a, b = results[:2]
    if a.folds is None:  # val: the one split, made here
        a, b = (CVResult(r.scores, val_folds(split), None) for r in (a, b))
    verdict = paired_difference(a, b, metric, name[0], name[1]).verdict
    return f"{best}; {verdict}" + ("; pass --cv K for a confidence interval" if a.folds.label == "val" else "")


def _format(table: pd.DataFrame, metric: str, score: str) -> str:
    """The printed table, best first: the ranking score (mean ± CI under CV), val/test of the ranking metric
    and of accuracy (results.csv has every column)."""
    shown = table.assign(layers=table["layers"].map(_short), classifier=table["model"])
    if score.startswith("cv_"):
        shown[f"cv_{metric}"] = table[score].map("{:.3f}".format) + " ± " + table[f"cv_{metric}_ci95"].map("{:.3f}".format)
    columns = ["layers", "classifier", "n_features", *([f"cv_{metric}"] if score.startswith("cv_") else []),
               f"val_{metric}", f"test_{metric}", "val_accuracy", "test_accuracy", "fit_seconds", "run_id"]
    return shown[list(dict.fromkeys(columns))].to_string(index=False)


def _short(layers: str) -> str:
    parts = str(layers).split(",")
    return layers if len(parts) <= 2 else f"{parts[0]}…+{len(parts) - 1} layers"


def parse_grid(items) -> dict:
    """["min_samples_leaf=1,2,5", "criterion=gini,entropy", "hidden=(256,),(128,64)"] -> {param: [values]}."""
    return params_dict(map(parse_grid_item, items))


def _view_columns(parts, width: int, n_views: int) -> np.ndarray:
    """A subset's columns (`parts` index one view's `width` columns) in every view's block, view by view."""
    one = np.concatenate(parts)
    return np.concatenate([view * width + one for view in range(n_views)])


def fit_specs(classifiers, grid: dict, params: dict, transforms: dict, seed: int, n_jobs, *,
              views=("id",), tta: bool = False) -> list[FitSpec]:
    """One FitSpec per classifier and per point of the grid part it accepts (fixed params likewise); all with
    `views` and `tta`."""
    names = [c.strip() for c in classifiers.split(",")] if isinstance(classifiers, str) else list(classifiers)
    accepted = {name: classifier_params(name) for name in names}
    unused = sorted(k for k in [*grid, *params] if not any(k in keys for keys in accepted.values()))
    if unused:
        raise FeatxError(f"parameter(s) {', '.join(unused)} belong to none of the classifiers {', '.join(names)}; "
                         "check the spelling against the scikit-learn estimator's parameters")
    specs = []
    for name in names:
        fixed = {k: v for k, v in params.items() if k in accepted[name]}
        keys = [k for k in grid if k in accepted[name]]
        specs += [FitSpec(classifier=name, params={**fixed, **dict(zip(keys, values))}, transforms=transforms,
                          seed=seed, n_jobs=n_jobs, views=views, tta=tta)
                  for values in itertools.product(*(grid[k] for k in keys))]
    return specs


def _score_subset(entry, X, columns, y, split, spec: FitSpec, folds, fold_jobs):
    """One row on a column subset, sliced where the fit runs: X itself is what joblib ships (or scatters once).
    With folds, its CV on them first (folds in parallel with fold_jobs); then the fit on train, scored on val
    and test. Returns (Scores, CVResult or None); recorded afterwards, in this process, once the best row (whose
    model is kept) is known."""
    features = X[:, columns]
    cv = cross_validate_spec(features, y, folds, spec, n_jobs=fold_jobs) if folds is not None else None
    return train_and_score(features, y, split, spec, class_names=entry.class_names), cv


def _best_model_row(scored, jobs, metric: str) -> int:
    """The row whose model compare keeps by default: the best non-baseline row by the ranking score (CV mean,
    else val)."""
    def rank(item):
        (scores, cv), (_, spec) = item
        if spec.classifier in BASELINES:
            return -np.inf
        value = summarize(cv)[f"{metric}_mean"] if cv is not None else scores.metrics.get("val", {}).get(metric)
        return -np.inf if value is None else value
    return max(range(len(jobs)), key=lambda n: rank((scored[n], jobs[n])))


def _expand_subsets(entry, layer_sets) -> list[tuple[LayerSelection, int | None]]:
    """(LayerSelection, depth index or None) per subset; "each" gives one per cached layer, with its depth."""
    if not layer_sets:
        raise FeatxError("compare needs at least one layer subset, e.g. --layer-sets top_activation blocks each")
    subsets = []
    for spec in layer_sets:
        if spec == EACH:
            subsets += [(select_cached(entry, name), depth) for depth, name in enumerate(entry.layer_info)
                        if name in entry.layers]
        else:
            subsets.append((select_cached(entry, spec), None))
    return subsets
