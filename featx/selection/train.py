"""Train and score, touching no disk: a FitSpec fitted on the train rows and scored (train_and_score), on
CV folds (cross_validate_spec), or on one fold with the transforms fitted once (fit_fold, score_fold). fit and
compare score a spec's folds along this one path, so a compare row refitted by `featx fit` (`--like RUN_ID`) gets
the same CV scores, not merely the same optimum within the solver's tolerance.

Every fold starts cold. A fold of a logistic regression started from the spec's train solution (as compare's did
until 2026-12-07) stops within the solver's tolerance of its optimum but on the side of that start, which had
seen the fold's held-out rows: on scikit-learn's digits (logreg, standardize, C 1 and 10, 5 folds x 30 seeds) the
warm-started folds scored higher than the cold ones in 136 folds and lower in 24, +0.27 points of accuracy on
average, an optimistic cross-validation."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from joblib import Parallel, delayed
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from featx.classifiers import fit_pipeline, make_classifier
from featx.classifiers.registry import bad_param_message
from featx.errors import FeatxError
from featx.features.transforms import build_feature_pipeline
from featx.selection.cv import CVResult, Folds, check_fold_rows, fold_result, quietly
from featx.selection.metrics import evaluate, score
from featx.selection.rowspace import ROW_SPACE, ROW_SPACE_RATIO, fold_threads, for_row_space, row_space
from featx.selection.spec import EVAL_SPLITS, FitSpec


@dataclass
class Scores:
    """What train_and_score returns: the fitted pipeline and its scores, nothing written anywhere."""

    pipeline: Pipeline  # fitted on the train rows
    metrics: dict  # {split: featx.selection.metrics.evaluate(...)} for each evaluated split that has rows
    n_train: int
    n_features: int
    fit_seconds: float
    predict_seconds: float


def cross_validate_spec(X, y, folds: Folds, spec: FitSpec, n_jobs: int | None = -1) -> CVResult:
    """spec scored on every fold as compare scores it (score_fold: the transforms fitted on the fold's train rows,
    an L2 linear model on wide features solved in their row space), folds in parallel with `n_jobs` joblib
    workers and the classifier itself on one core, so the two do not oversubscribe.

    X : ndarray of shape (n_rows, n_features); y : (n_rows,); only the rows in `folds` are read.
    """
    check_fold_rows(X, y, folds)
    spec = dataclasses.replace(spec, n_jobs=1) if n_jobs != 1 else spec
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(score_fold)(spec, X, y, train, held_out) for train, held_out in folds.splits
    )
    return fold_result(folds, fitted)


def by_metric(summary: dict) -> dict:
    """summarize()'s {"<metric>_mean": m, "<metric>_ci95": c} as {metric: {"mean": m, "ci95": c}}."""
    names = dict.fromkeys(k.rpartition("_")[0] for k in summary)
    return {m: {"mean": summary[f"{m}_mean"], "ci95": summary[f"{m}_ci95"]} for m in names}


def train_and_score(X, y, split, spec: FitSpec, *, class_names, eval_splits=EVAL_SPLITS, head_params=None) -> Scores:
    """Fit spec's pipeline on the rows whose split is "train" and score it on `eval_splits`; writes nothing.

    X : ndarray of shape (n_samples, n_features), or (n_images, V * n_features) with spec's V views side by
        side; y : int ndarray of shape (n_samples,) indexing class_names. Scores.n_features is one view's.
    split : ndarray of shape (n_samples,) naming each row's part: "train" rows are fitted, the rows of each
        name in eval_splits are scored, any other name is ignored. A cross-validation fold is a split array
        with "train" and "val" per row. "val" rows are also the dense head's validation data.
    head_params : passed to the classifier's fit (featx.classifiers.fit_pipeline), e.g. a shared gram.
    """
    train, val = split == "train", split == "val"
    if not train.any():
        raise FeatxError("no train rows to fit on; re-run `featx extract` with a --split that has a train part")
    pipeline = spec.pipeline()
    began = time.perf_counter()
    try:
        fit_pipeline(pipeline, X[train], y[train], X[val], y[val], **(head_params or {}))
    except InvalidParameterError as exc:  # a constraint scikit-learn checks only once it sees the data
        raise FeatxError(bad_param_message(exc, spec.classifier)) from None
    fit_seconds = time.perf_counter() - began
    began = time.perf_counter()
    predictions = {s: pipeline.predict(X[split == s]) for s in eval_splits if (split == s).any()}
    predict_seconds = time.perf_counter() - began
    metrics = {s: evaluate(y[split == s], p, class_names) for s, p in predictions.items()}
    return Scores(pipeline, metrics, int(train.sum()), X.shape[1] // len(spec.views), fit_seconds, predict_seconds)


def fit_fold(spec: FitSpec, X_train, y_train, X_eval, reuse: bool = True, gram=None):
    """spec fitted on one fold's rows: (fitted estimator, X_eval as it takes them, converged).

    X_train : ndarray of shape (n_train, n_features); y_train : (n_train,); X_eval : (n_eval, n_features).
    With reuse and a plain spec the transforms are fitted once, as the Pipeline would, and then an L2 linear
    model on more than ROW_SPACE_RATIO times as many features as rows is solved in the fold's row space (the
    estimator then takes row-space coordinates, which X_eval is returned in: the same optimum, the same decisions).
    Every fit starts cold (see the module's note on warm starts).
    gram : with reuse, a featx.classifiers.gram.Gram handed to the classifier's fit (the exact SVM's: the batch's
    fits on these rows share it). Without reuse: spec's Pipeline, cold.
    """
    with fold_threads(spec.classifier):
        return _fit_fold(spec, X_train, y_train, X_eval, reuse, gram)


def _fit_fold(spec: FitSpec, X_train, y_train, X_eval, reuse: bool, gram):
    if not (reuse and spec.plain and spec.classifier != "dense"):
        estimator = spec.pipeline()
        _, converged = quietly(estimator.fit, X_train, y_train)
        return estimator, X_eval, converged
    steps = Pipeline(build_feature_pipeline(seed=spec.seed, **spec.transforms) or [("identity", "passthrough")])
    X_train, transformed = quietly(steps.fit_transform, X_train, y_train)  # e.g. kbins' k-means: counted, not shown
    X_eval = steps.transform(X_eval)
    estimator = make_classifier(spec.classifier, spec.params, spec.seed, spec.n_jobs)
    if spec.classifier in ROW_SPACE and X_train.shape[1] > ROW_SPACE_RATIO * X_train.shape[0]:
        X_train, X_eval = row_space(X_train, X_eval)
        estimator = for_row_space(estimator)
    _, converged = quietly(estimator.fit, X_train, y_train, **({} if gram is None else {"gram": gram}))
    return estimator, X_eval, transformed and converged


def score_fold(spec: FitSpec, X, y, train, held_out, reuse: bool = True, gram=None):
    """spec fitted on one fold (fit_fold) and scored on its held-out rows: ({metric: value, "fit_seconds": s},
    converged). X : ndarray of shape (n_rows, n_features); train, held_out : row indices into X and y."""
    with fold_threads(spec.classifier):  # the fit and its predictions, as fit_fold
        began = time.perf_counter()
        estimator, X_eval, converged = _fit_fold(spec, X[train], y[train], X[held_out], reuse, gram)
        seconds = round(time.perf_counter() - began, 3)
        scores = score(y[held_out], estimator.predict(X_eval))
    return {**scores, "fit_seconds": seconds}, converged
