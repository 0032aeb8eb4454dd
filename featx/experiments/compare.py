"""compare: layer subsets x classifiers x parameter grid in one command, every fit logged as a run.

The union of all requested layers is read from the cache once; each subset is a column slice of it
(meta.attrs["feature_slices"]), so a layer is never read twice however many subsets contain it.
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
from featx.classifiers import classifier_params
from featx.distributed import joblib_backend
from featx.errors import FeatxError
from featx.experiments.fit import FitSpec, _silent, record_run, train_and_score
from featx.experiments.runs import new_run_id, prepare_log, writable_folder
from featx.features.load import load, select_cached
from featx.reports import plot_layer_comparison
from featx.values import params_dict, parse_grid_item

EACH = "each"
SAVE_MODELS = ("best", "all")
TABLE_COLUMNS = ("layers", "depth", "classifier", "params", "n_features", "val_accuracy", "val_f1_macro",
                 "test_accuracy", "test_f1_macro", "fit_seconds", "run_id")


@dataclass
class CompareResult:
    table: pd.DataFrame  # one row per (layer subset, classifier, params), columns TABLE_COLUMNS
    csv: Path
    plot: Path


def compare(cache=None, *, layer_sets=("blocks",), classifiers=("rf",), grid: dict | None = None,
            params: dict | None = None, seed: int = 0, n_jobs: int = 1, metric: str = "val_accuracy",
            plots: bool = False, cache_dir=None, log=print, runs_dir=None, cluster=None, cluster_config=None,
            save_models: str = "best", **transforms) -> CompareResult:
    """Fit every (layer subset, classifier, grid point) and tabulate val/test scores.

    layer_sets : subsets, each a layer name, group (all, blocks, fc), comma list of them, or "each" (every
        cached layer alone, with its depth index, for a per-depth accuracy curve).
    classifiers : names (or one comma string), e.g. "rf,svm,logreg".
    grid : {param: [values]}; params : fixed parameters. Each goes only to the classifiers that have
        that parameter (rf gets min_samples_leaf, logreg does not); one no classifier has is an error.
    n_jobs : fits run in parallel with joblib; with n_jobs=1 each classifier uses every core instead.
    cluster : run the fits on Dask workers (a featx.distributed spec such as "local:2", or a Client), the
        feature matrix sent to each worker once; cluster_config : its options. Results land where a local run puts them.
    save_models : "best" (default) saves the model of the best row by val accuracy only (the first of equals),
        "all" every row's; rows without a model are logged all the same, with an empty model path.
    log : called with each message line and the table (default print); None prints nothing.
    metric : the column plotted. plots : also draw each run's confusion PNGs (off: drawing them takes
        longer than most fits; the confusion CSVs are always written). transforms : as in fit.
    Every FitSpec is built (and so checked) before any data is read.
    Saves results.csv and layer_comparison.png in <cache_dir>/reports/compare-<id>/ (runs_dir : as in fit;
    then <runs_dir>/reports/compare-<id>/).
    """
    grid, log = grid or {}, log or _silent
    if save_models not in SAVE_MODELS:
        raise FeatxError(f"unknown --save-models '{save_models}'; choose one of {', '.join(SAVE_MODELS)}")
    specs = fit_specs(classifiers, grid, params or {}, transforms, seed, -1 if n_jobs == 1 and cluster is None else 1)
    entry = Cache(cache_dir, runs_dir=runs_dir).open(cache)
    prepare_log(entry.cache)  # unwritable folders or a broken log fail before any fit
    reports = writable_folder(entry.cache.reports_dir, "reports")
    subsets = _expand_subsets(entry, [layer_sets] if isinstance(layer_sets, str) else layer_sets)
    jobs = [(subset, spec) for subset in subsets for spec in specs]
    X, y, meta = load(entry, layers=[n for selection, _ in subsets for n in selection.names])  # the union, once
    split, slices = meta["split"].to_numpy(), meta.attrs["feature_slices"]
    log(f"compare: {len(subsets)} layer subset(s) x classifiers x grid = {len(jobs)} fit(s), {n_jobs} in parallel, "
        f"on {entry_label(entry)}")
    columns = {selection: np.concatenate([np.arange(*slices[n]) for n in selection.names]) for selection, _ in subsets}
    backend = nullcontext() if cluster is None else joblib_backend(cluster, scatter=[X], config=cluster_config)
    with backend:
        scored = Parallel(n_jobs=n_jobs if cluster is None else -1)(
            delayed(_score_subset)(entry, X, columns[selection], y, split, spec) for (selection, _), spec in jobs)
    best = int(np.argmax([s.metrics.get("val", {}).get("accuracy", -1.0) for s in scored]))
    fits = [record_run(entry, spec, scores, selection=selection, log=log, plots=plots,
                       keep_model=save_models == "all" or n == best)
            for n, (((selection, _), spec), scores) in enumerate(zip(jobs, scored))]
    table = pd.DataFrame([{**{k: r.row[k] for k in TABLE_COLUMNS if k in r.row}, "depth": depth,
                           "model": " ".join([spec.classifier, *(f"{k}={spec.params[k]}" for k in grid if k in spec.params)])}
                          for r, ((_, depth), spec) in zip(fits, jobs)], columns=[*TABLE_COLUMNS, "model"])
    if table["depth"].isna().all():
        table = table.drop(columns="depth")
    folder = reports / f"compare-{new_run_id()}"
    folder.mkdir(parents=True)
    table.drop(columns="model").to_csv(folder / "results.csv", index=False)  # model = classifier + grid params
    plot = plot_layer_comparison(table, folder / "layer_comparison.png", metric=metric, x="layers", hue="model")
    log(table.drop(columns="model").to_string(index=False))
    log(f"saved {folder / 'results.csv'} and {plot}")
    return CompareResult(table, folder / "results.csv", plot)


def parse_grid(items) -> dict:
    """["min_samples_leaf=1,2,5", "criterion=gini,entropy", "hidden=(256,),(128,64)"] -> {param: [values]}."""
    return params_dict(map(parse_grid_item, items))


def fit_specs(classifiers, grid: dict, params: dict, transforms: dict, seed: int, n_jobs) -> list[FitSpec]:
    """One FitSpec per classifier and per point of the grid part it accepts (fixed params likewise)."""
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
                          seed=seed, n_jobs=n_jobs)
                  for values in itertools.product(*(grid[k] for k in keys))]
    return specs


def _score_subset(entry, X, columns, y, split, spec: FitSpec):
    """One fit on a column subset, sliced where the fit runs: X itself is what joblib ships (or scatters once).
    Recorded afterwards, in this process, once the best row (whose model is kept) is known."""
    return train_and_score(X[:, columns], y, split, spec, class_names=entry.class_names)


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
