"""tune: search a classifier's key parameters on val (or CV), refit on train+val, score test once, log the refit.

The search itself is featx.selection.search (pure, on arrays); this verb reads the entry (or the tail's cached maps),
runs it for each classifier on the same selection splits, records each refit as a run and writes the search curves
in a tune report folder (featx.runs.reports). Head2Toe's recipe (`--select group-lasso`) is tuned by
featx.experiments.tune_head2toe, which `tune` hands a Head2ToeSearch.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from featx.cache.store import Cache
from featx.classifiers.registry import TAIL, large_n_note
from featx.compute import Compute
from featx.errors import FeatxError
from featx.experiments.inputs import check_trainable, load_features, loaded_views, tail_specs
from featx.features.head2toe import bind_spec
from featx.figures.selection_plots import plot_search_curve
from featx.progress import silent
from featx.runs.record import record_run
from featx.runs.reports import curve_files, new_report_folder, write_tune_report
from featx.runs.store import prepare_log
from featx.selection.cv import make_folds
from featx.selection.halving import BUDGET_PARAM
from featx.selection.metrics import SELECTION_SPLITS, evaluate
from featx.selection.search import TuneResult, convergence_line, search
from featx.selection.spaces import budget_search
from featx.selection.spec import Evaluation, FitSpec, Head2ToeSearch, tune_specs
from featx.selection.train import Scores


def tune(
    entry=None,
    layers=None,
    specs: list[FitSpec] | Head2ToeSearch | None = None,
    evaluation: Evaluation | None = None,
    *,
    command: str | None = None,
    cache=None,
    compute: Compute | None = None,
    log=print,
):
    """Tune each spec of `specs` on `layers` of `entry`, log each refit (on train+val) as a run, save the curves.

    entry : a cache entry of `cache` (name, key prefix, folder or CacheEntry; None: the most recent); for the tail
        given no cut (its params without "cut"), a list of entries of the same images may name more cuts: every cut
        the entries cache with --pool none (among `layers`) becomes an axis of the search, its maps streamed from
        HDF5 (featx.features.maps.CutMaps); a line names the cut that won, and the refit is logged on that cut's
        entry and layer.
    specs : one FitSpec per classifier tuned, its params fixed for every point, its transforms, seed, views and tta
        (featx.selection.spec.tune_specs builds them; default: logistic regression); or a Head2ToeSearch
        (tune_specs' for select="group-lasso"): Head2Toe's recipe, tuned by featx.experiments.tune_head2toe.
    evaluation : how the points are selected: cv (K for repeated stratified K-fold over train+val, cv_repeats
        times; None: on val; the folds are made once, so every classifier is selected on the same paired splits),
        the metric (None: chosen from the class balance, printed) and the search ("exact": the grid, then a finer one
        around its best; "halving": successive halving with training epochs as the budget, for classifiers trained
        by epochs). Each refit is fitted on train+val and logged with the score it was selected by (cv_* columns, or
        on val the val_* scores of the best point fitted on train); its test scores are the one test evaluation.
    command : the command line that ran this tune, kept in the report folder. compute : selection splits in parallel
        on `workers` (or on a Dask cluster), a progress bar. Writes <reports>/tune-<id>/<clf>_curve.csv and .png.
    Returns a list of TuneResult (featx.selection.search.selected_line names the best of them by selection score),
    or for a Head2ToeSearch its Head2ToeResult.
    """
    specs = specs if specs is not None else tune_specs()
    if isinstance(specs, Head2ToeSearch):
        from featx.experiments.tune_head2toe import tune_head2toe

        return tune_head2toe(entry, layers, specs, evaluation, command=command, cache=cache, log=log)
    evaluation = replace(evaluation or Evaluation(fit_on="train+val"), fit_on="train+val")
    log, compute = log or silent, compute or Compute()
    cv, metric = evaluation.cv, evaluation.metric
    if evaluation.search == "halving":
        for spec in specs:
            budget_search(spec.classifier)  # a classifier not trained by epochs fails before any data is read
    compute.require()
    entries = Cache.resolve(cache).open_all(entry)
    entry = entries[0]
    if len(entries) > 1 and any(spec.classifier != TAIL for spec in specs):
        raise FeatxError(
            "tune's --cache (--entry) names candidate entries for --select group-lasso or the cuts of --clf tail; "
            "tune one entry (positional) or add --select group-lasso"
        )
    # --clf tail: its cut's maps and the entry's backbone; without --cut, the cuts the entries cache are searched
    specs, layers = tail_specs(entry, specs, layers, cuts=entries)
    check_trainable(entry, cv=cv, selects=True)  # before anything is written
    features = load_features(entries, specs, layers, views=loaded_views(specs[0]))  # the tail's stream from HDF5
    X, y, meta = features
    specs = [bind_spec(spec, features.feature_slices) for spec in specs]  # the layer layout of --normalize/--select
    prepare_log(entry.cache)  # unwritable folders or a broken log fail before any fit
    split = meta["split"].to_numpy()
    for note in filter(
        None,
        (
            large_n_note(spec.classifier, int(np.isin(split, SELECTION_SPLITS).sum()) * len(spec.views))
            for spec in specs
        ),
    ):
        log(note)
    folds = make_folds(y, split, cv, evaluation.cv_repeats, evaluation.seed) if cv else None
    folder = new_report_folder(entry.cache, "tune")
    results = []
    with compute.joblib(entry.cache, scatter=[X], log=log):
        for spec in specs:
            clf = spec.classifier
            result = search(
                X,
                y,
                split,
                spec,
                metric=metric,
                folds=folds,
                space=evaluation.search,
                compute=compute,
                log=log,
                summary=False,
            )
            metric = result.metric  # the default metric is decided (and printed) once
            with curve_files(folder, clf) as (csv, png):
                result.curve.to_csv(csv, index=False)
                plot_search_curve(
                    result.curve,
                    png,
                    result.searched,
                    result.metric,
                    title=f"{clf}: {result.metric} on {result.selection}",
                )
                _record(
                    *_winner(entry, X, features.selection, result, log),
                    y,
                    split,
                    result,
                    spec,
                    replace(evaluation, metric=metric),
                    log,
                )
            results.append(result)
    write_tune_report(
        folder,
        entry,
        metric=results[0].metric if results else None,
        selection=results[0].selection if results else None,
        run_ids={r.classifier: r.run_id for r in results},
        command=command,
    )
    log(convergence_line(results))
    log(f"saved search curves in {folder}")
    return results


def _winner(entry, X, selection, result: TuneResult, log) -> tuple:
    """(entry, X, selection) the refit is recorded on: as loaded, or after a search over the cut (X a CutMaps) the
    winning cut's entry, maps and layer, with one line saying which cut won and how each cut did."""
    if "cut" not in result.searched:
        return entry, X, selection
    from featx.backbones.layers import LayerSelection

    curve, metric, won = result.curve, result.metric, result.best_params["cut"]
    parts = []
    for cut in X.cuts:
        mine = curve[(curve["cut"] == cut) & (curve["stage"] != "default")]
        if BUDGET_PARAM in mine and mine[BUDGET_PARAM].notna().any():
            mine = mine[mine[BUDGET_PARAM] == mine[BUDGET_PARAM].max()]
            top = mine.loc[mine[metric].idxmax()]
            parts.append(f"{cut} {top[metric]:.3f} at {int(top[BUDGET_PARAM])} epochs")
        else:
            parts.append(f"{cut} {mine[metric].max():.3f}")
    log(f"tune {result.classifier}: cut {won} won on {result.selection} ({metric}, best per cut: {'; '.join(parts)})")
    maps = X.for_cut(won)
    return maps.entry, maps, LayerSelection(won, (won,))


def _record(entry, X, selection, y, split, result: TuneResult, spec: FitSpec, evaluation: Evaluation, log) -> None:
    """Log the refit as a run: the model (fitted on train+val), its one test evaluation, the score it was selected
    by (the best point's, on the selection splits) and the seconds the refit took (the search's are in the report)."""
    spec = replace(spec, params=result.best_params)
    test = split == "test"
    began = time.perf_counter()
    metrics = {"test": evaluate(y[test], result.pipeline.predict(X[test]), entry.class_names)} if test.any() else {}
    scores = Scores(
        result.pipeline,
        metrics,
        int(np.isin(split, SELECTION_SPLITS).sum()),
        X.shape[1] // len(spec.views),
        result.refit_seconds,
        time.perf_counter() - began,
    )
    result.run_id = record_run(
        entry,
        spec,
        scores,
        selection=selection,
        log=log,
        plots=False,
        cv=result.selection_result(),
        evaluation=evaluation,
    ).run_id


REPORT_INFO, REPORT_VERSION = "report.json", 1
