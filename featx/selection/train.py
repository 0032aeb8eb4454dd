"""Train and score, touching no disk: a FitSpec fitted on the train rows and scored (train_and_score), on
CV folds (cross_validate_spec), or on one fold with the transforms fitted once and a warm start (fit_fold)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from featx.classifiers import fit_pipeline, make_classifier
from featx.classifiers.registry import bad_param_message
from featx.errors import FeatxError
from featx.features.transforms import build_feature_pipeline
from featx.selection.cv import (
    CVResult,
    Folds,
    cross_validate,
    quietly,
)
from featx.selection.metrics import evaluate
from featx.selection.rowspace import ROW_SPACE, ROW_SPACE_RATIO, for_row_space, row_space
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
    """spec's pipeline (transforms refitted inside each fold) scored on every fold, folds in parallel with
    `n_jobs` joblib workers and the classifier itself on one core, so the two do not oversubscribe."""
    pipeline = dataclasses.replace(spec, n_jobs=1).pipeline() if n_jobs != 1 else spec.pipeline()
    return cross_validate(pipeline, X, y, folds, n_jobs=n_jobs)


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


WARM_STARTS = ("logreg",)  # solvers that continue from given coefficients (lbfgs); liblinear (LinearSVC) cannot


def fit_fold(spec: FitSpec, X_train, y_train, X_eval, init=None, reuse: bool = True, gram=None):
    """spec fitted on one fold's rows: (fitted estimator, X_eval as it takes them, converged).

    X_train : ndarray of shape (n_train, n_features); y_train : (n_train,); X_eval : (n_eval, n_features).
    With reuse and a plain spec the transforms are fitted once, as the Pipeline would, and then an L2 linear
    model on more than ROW_SPACE_RATIO times as many features as rows is solved in the fold's row space (the
    estimator then takes row-space coordinates, which X_eval is returned in); a logistic regression otherwise
    starts from `init` (coef_, intercept_), e.g. the row's train solution. Either way the fit ends at the
    estimator's own optimum (within its tolerance), so the fold's predictions are those of a cold fit.
    gram : with reuse, a featx.classifiers.gram.Gram handed to the classifier's fit (the exact SVM's: the batch's
    fits on these rows share it). Without reuse: spec's Pipeline, cold.
    """
    if not (reuse and spec.plain and spec.classifier != "dense"):
        estimator = spec.pipeline()
        _, converged = quietly(estimator.fit, X_train, y_train)
        return estimator, X_eval, converged
    steps = Pipeline(build_feature_pipeline(seed=spec.seed, **spec.transforms) or [("identity", "passthrough")])
    X_train, X_eval = steps.fit_transform(X_train, y_train), steps.transform(X_eval)
    estimator = make_classifier(spec.classifier, spec.params, spec.seed, spec.n_jobs)
    if spec.classifier in ROW_SPACE and X_train.shape[1] > ROW_SPACE_RATIO * X_train.shape[0]:
        X_train, X_eval = row_space(X_train, X_eval)
        estimator, init = for_row_space(estimator), None  # the train fit's coefficients are of the features
    if init is not None and spec.classifier in WARM_STARTS:
        estimator.set_params(warm_start=True)
        estimator.coef_, estimator.intercept_ = init[0].copy(), init[1].copy()
    _, converged = quietly(estimator.fit, X_train, y_train, **({} if gram is None else {"gram": gram}))
    return estimator, X_eval, converged
