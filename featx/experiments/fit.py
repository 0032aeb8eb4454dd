"""fit: one classifier Pipeline on one layer subset of a cache entry, scored on val and test, logged as a run.

A fit is one value, `FitSpec`; featx.selection.train.train_and_score turns features and a FitSpec into `Scores`
without touching disk (compare, and cross-validation folds, call it many times); featx.runs.record.record_run
writes the run folder, the model, the metrics and the log row. `fit` = load + train_and_score + record_run.
Works from the cache alone: no backbone is built, and TensorFlow is imported only for the dense head.
"""

from __future__ import annotations

import dataclasses

from featx.cache.store import Cache
from featx.classifiers.registry import large_n_note
from featx.experiments.inputs import check_trainable, load_features, loaded_views, tail_specs
from featx.features.head2toe import bind_blocks
from featx.features.load import require_layers
from featx.progress import silent
from featx.runs.record import FitResult, record_run
from featx.runs.store import prepare_log
from featx.selection.cv import make_folds, quietly, summarize
from featx.selection.spec import Evaluation, FitSpec
from featx.selection.train import by_metric, cross_validate_spec, train_and_score


def fit(
    entry=None,
    layers=None,
    spec: FitSpec | None = None,
    evaluation: Evaluation | None = None,
    *,
    cache=None,
    log=print,
) -> FitResult:
    """Fit `spec` on the train split of `layers` of `entry`, score it on val and test, save the model, log the run.

    entry : a cache entry (name, key prefix, folder or CacheEntry; None: the most recent) of `cache`, or a list of
        entries of the same images whose features are concatenated (featx.features.load.load_combined); the run is
        logged in the first entry's runs folder.
    layers : names and groups (all, blocks, final, fc), or a LayerSelection, concatenated in the backbone's depth order
        whatever order they are named in; None = every cached layer.
    spec : what is fitted (featx.selection.spec.fit_spec builds one from keywords; default: a random forest).
    evaluation : how it is also judged (its cv, cv_repeats and fold seed: the spec scored by repeated stratified
        K-fold over train+val, folds in parallel on spec.n_jobs workers; the mean and 95% CI of each metric are
        logged). Default: the fixed val split. The model saved is the one fitted on train, scored once on val and test.
    cache : a Cache (its runs_dir, where a read-only cache keeps its runs elsewhere), a cache folder, or None
        ($FEATX_CACHE or ./cache).
    log : called with each message line (default print); None prints nothing.
    """
    spec, evaluation, log = spec or FitSpec(), evaluation or Evaluation(), log or silent
    cv, clf = evaluation.cv, spec.classifier
    entries = Cache.resolve(cache).open_all(entry)
    (spec,), layers = tail_specs(entries[0], [spec], layers)  # a tail's params: its cut's maps, the entry's backbone
    for other in entries[1:]:
        require_layers(other)
    check_trainable(entries[0], cv=cv, log=log)  # data that cannot be fitted: one line, nothing read or written
    features = load_features(entries, [spec], layers, views=loaded_views(spec))  # the tail's maps: read as it trains
    X, y, meta = features
    spec = dataclasses.replace(spec, transforms=bind_blocks(spec.transforms, features.feature_slices))  # their layout
    prepare_log(entries[0].cache)  # an unwritable folder or a broken log fails before training
    if layers is None:
        log(
            f"no layers given: fitting on every cached layer of {'+'.join(e.name for e in entries)} "
            f"({len(features.layers)}, {X.shape[1] // len(spec.views)} features); choose some with --layers (API: layers=)"
        )
    split = meta["split"].to_numpy()
    note = large_n_note(clf, int((split == "train").sum()) * len(spec.views))  # the rows fitted: views counted
    if note:
        log(note)
    result = None
    if cv:  # the folds as compare fits them (featx.selection.train.score_fold), so a compare row refits exactly
        result = cross_validate_spec(
            X, y, make_folds(y, split, cv, evaluation.cv_repeats, evaluation.seed), spec, n_jobs=spec.n_jobs
        )
        log(
            f"{result.folds.label}: "
            + ", ".join(f"{m} {v['mean']:.3f} ± {v['ci95']:.3f}" for m, v in by_metric(summarize(result)).items())
        )
    scores, converged = quietly(train_and_score, X, y, split, spec, class_names=entries[0].class_names)
    unfinished = (not converged) + (result.not_converged if result is not None else 0)
    if unfinished:  # one line, not a ConvergenceWarning per fit
        log(
            f"note: {unfinished} fit(s) of {1 + (len(result.folds) if result is not None else 0)} stopped at max_iter "
            "without converging (their scores are of unfinished fits); raise max_iter (--param max_iter=N), "
            "standardize (--standardize) or regularize more (smaller C)"
        )
    return record_run(
        entries if len(entries) > 1 else entries[0],
        spec,
        scores,
        selection=features.selection,
        log=log,
        cv=result,
        evaluation=evaluation,
    )
