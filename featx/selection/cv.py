"""Model selection you can trust: metrics, paired cross-validation folds, confidence intervals, baselines.

Everything here is a pure function of arrays, so fit, compare and tune can share it:

    folds = make_folds(y, split, n_splits=5, n_repeats=2, seed=0)      # train+val rows only
    result = cross_validate(pipeline, X, y, folds, n_jobs=2)             # a fresh clone per fold
    summarize(result)                                                    # mean and 95% CI per metric
    paired_difference(result_a, result_b, "balanced_accuracy", "a", "b").verdict  # on the same folds

Baselines are the registry's classifiers "majority" and "stratified" (featx.classifiers.BASELINES), scored
through the same folds as any model. Test rows never enter a fold (make_folds refuses to index them), so
nothing chosen here has seen test.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import stats
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from featx.errors import FeatxError
from featx.selection.metrics import METRICS, SELECTION_SPLITS, check_metric, score


@dataclass(frozen=True)
class Folds:
    """Paired resampling splits over the selection rows: build once, use for every row of a comparison.

    splits : tuple of (train_rows, eval_rows) index arrays into the full (n_rows,) arrays; never a test row.
    repeats : ndarray of shape (n_splits_total,), the repeat each split belongs to.
    n_rows : length of the arrays the indices point into (checked by cross_validate).
    label : "val" for the one train -> val split, else e.g. "cv5x2".
    """

    splits: tuple
    repeats: np.ndarray
    n_rows: int
    label: str

    def __len__(self) -> int:
        return len(self.splits)

    @property
    def test_fraction(self) -> float:
        """Mean n_eval / n_train over splits: the Nadeau-Bengio correction term."""
        return float(np.mean([len(e) / len(t) for t, e in self.splits]))

    def fingerprint(self) -> str:
        """Equal for equal folds: scores from different folds must not be paired."""
        digest = hashlib.sha256()
        for pair in self.splits:
            for index in pair:
                digest.update(np.asarray(index, dtype=np.int64).tobytes() + b"|")
        return digest.hexdigest()


def make_folds(y, split, n_splits: int = 5, n_repeats: int = 1, seed: int = 0, groups=None) -> Folds:
    """Repeated stratified K-fold over the train+val rows; test rows are never in any fold.

    y : ndarray of shape (n_rows,), class indices; split : ndarray of shape (n_rows,) of "train"/"val"/"test".
    groups : ndarray of shape (n_rows,) or None. Rows with the same group (augmented views of one image)
        always land on the same side of a split: StratifiedGroupKFold when a group repeats, else
        StratifiedKFold.
    seed : the same seed gives the same folds, so every row of one comparison is scored on identical,
        paired folds.
    """
    y, split = np.asarray(y), np.asarray(split)
    rows = np.flatnonzero(np.isin(split, SELECTION_SPLITS))
    if n_splits < 2 or n_repeats < 1:
        raise FeatxError(f"cross-validation needs K >= 2 folds and >= 1 repeat, got K={n_splits} R={n_repeats}")
    smallest = np.unique(y[rows], return_counts=True)[1].min() if len(rows) else 0
    if smallest < n_splits:
        raise FeatxError(
            f"the smallest class has {smallest} train+val image(s), fewer than K={n_splits} folds; "
            f"use --cv {max(2, smallest)} or fewer"
        )
    grouped = groups is not None and len(np.unique(np.asarray(groups)[rows])) < len(rows)
    rng = np.random.RandomState(seed)
    splits, repeats = [], []
    for repeat in range(n_repeats):
        cv = (StratifiedGroupKFold if grouped else StratifiedKFold)(n_splits, shuffle=True, random_state=rng)
        for train, held_out in cv.split(rows, y[rows], np.asarray(groups)[rows] if grouped else None):
            splits.append((rows[train], rows[held_out]))
            repeats.append(repeat)
    folds = Folds(tuple(splits), np.asarray(repeats), len(y), f"cv{n_splits}x{n_repeats}")
    _check_no_test(folds, split)
    return folds


def val_folds(split) -> Folds:
    """The single train -> val split as Folds, so selection on val and on CV share one code path."""
    split = np.asarray(split)
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if not len(train) or not len(val):
        raise FeatxError(
            "selection on val needs train and val rows; re-extract with a --split that has both, "
            "or select by cross-validation (--cv K)"
        )
    return Folds(((train, val),), np.zeros(1, dtype=int), len(split), "val")


def _check_no_test(folds: Folds, split) -> None:
    for pair in folds.splits:
        for index in pair:
            if not np.isin(split[index], SELECTION_SPLITS).all():
                raise AssertionError("a fold indexes a test row")  # make_folds's guarantee, not a user error


@dataclass
class CVResult:
    scores: pd.DataFrame  # one row per fold: repeat, fold, one column per METRICS name, fit_seconds
    folds: Folds
    estimators: list | None  # the fitted clone of each fold, when asked for
    not_converged: int = 0  # folds whose fit ended with a ConvergenceWarning (see quietly)


def cross_validate(estimator, X, y, folds: Folds, n_jobs: int | None = 1, return_estimators: bool = False) -> CVResult:
    """Fit a fresh clone of `estimator` on each fold's train rows and score it on the fold's held-out rows.

    estimator : unfitted sklearn estimator or Pipeline; with transforms in the Pipeline (standardize, FNE,
        PCA), they are fitted on the fold's train rows only, so no statistic leaks from the held-out rows.
    X : ndarray of shape (n_rows, n_features); y : ndarray of shape (n_rows,). Only rows in `folds` are read.
    n_jobs : folds in parallel (joblib); keep the estimator's own n_jobs at 1 when this is > 1.
    """
    check_fold_rows(X, y, folds)
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(_fit_fold)(clone(estimator), X, y, train, held_out) for train, held_out in folds.splits
    )
    return fold_result(folds, [f[1:] for f in fitted], [f[0] for f in fitted] if return_estimators else None)


def check_fold_rows(X, y, folds: Folds) -> None:
    """Refuse X and y of another length than the rows `folds` were made for, in one line."""
    if len(X) != folds.n_rows or len(y) != folds.n_rows:
        raise FeatxError(f"folds were made for {folds.n_rows} rows but X has {len(X)}; make the folds from this y")


def fold_result(folds: Folds, fitted, estimators=None) -> CVResult:
    """A CVResult of `fitted`, one ({metric: value, "fit_seconds": s}, converged) per fold of `folds`, in order."""
    n_splits = np.bincount(folds.repeats)[0]
    scores = pd.DataFrame(
        [{"repeat": int(r), "fold": i % n_splits, **s} for i, (r, (s, _)) in enumerate(zip(folds.repeats, fitted))]
    )
    return CVResult(scores, folds, estimators, sum(not converged for _, converged in fitted))


def _fit_fold(estimator, X, y, train, held_out):
    began = time.perf_counter()
    _, converged = quietly(estimator.fit, X[train], y[train])
    seconds = round(time.perf_counter() - began, 3)
    return estimator, {**score(y[held_out], estimator.predict(X[held_out])), "fit_seconds": seconds}, converged


def confidence_interval(values, test_fraction: float, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the CI of per-fold values, with the Nadeau-Bengio correction.

    CV folds are not independent (their training sets overlap), so the plain t-interval over folds is
    too narrow. Nadeau & Bengio (2003) inflate the variance from s^2/J to (1/J + n_eval/n_train) s^2 for
    J resampled splits (the "corrected resampled t-test"); the interval then shrinks with more repeats
    but never to zero. It is still an approximation: treat overlapping intervals as "within noise".
    With one split (selection on val) there is no spread to measure: the half-width is NaN.
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    variance = (1 / len(values) + test_fraction) * values.var(ddof=1)
    return float(values.mean()), float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * np.sqrt(variance))


def summarize(result: CVResult) -> dict[str, float]:
    """{"<metric>_mean": ..., "<metric>_ci95": ...} for every metric (the ci95 is a half-width)."""
    out = {}
    for name in METRICS:
        out[f"{name}_mean"], out[f"{name}_ci95"] = confidence_interval(result.scores[name], result.folds.test_fraction)
    return out


@dataclass(frozen=True)
class Difference:
    metric: str
    mean: float  # a - b, in the metric's units (0..1)
    ci95: float  # half-width; NaN with a single split
    verdict: str


def paired_difference(a: CVResult, b: CVResult, metric: str, name_a: str = "a", name_b: str = "b") -> Difference:
    """Per-fold score differences a - b on identical folds, their mean and corrected 95% CI, and a verdict:
    "<a> beats <b> by 1.2 ± 0.8 points" when the CI excludes 0, else "<a> and <b> are within noise (...)".

    Pairing removes the fold-to-fold difficulty that both rows share, so it is much tighter than comparing
    two separate intervals; it needs both results to come from the same Folds (checked).
    """
    check_metric(metric)
    if a.folds.fingerprint() != b.folds.fingerprint():
        raise FeatxError("the two results were scored on different folds; make the folds once and reuse them")
    mean, ci = confidence_interval(a.scores[metric].to_numpy() - b.scores[metric].to_numpy(), a.folds.test_fraction)
    ahead, behind = (name_a, name_b) if mean >= 0 else (name_b, name_a)
    amount = f"{100 * abs(mean):.1f} ± {100 * ci:.1f} points of {metric}"
    if np.isnan(ci):
        verdict = f"{ahead} is ahead of {behind} by {100 * abs(mean):.1f} points of {metric} (one split: no CI)"
    elif abs(mean) > ci:
        verdict = f"{ahead} beats {behind} by {amount}"
    else:
        verdict = f"{ahead} and {behind} are within noise ({amount})"
    return Difference(metric, mean, ci, verdict)


def quietly(call, *args, **kwargs) -> tuple[object, bool]:
    """(call(*args, **kwargs), converged): a ConvergenceWarning raised during the call (a solver stopped at
    max_iter) becomes converged=False, for tune and compare to count (one summary line each), instead of one
    warning per fit. Recorded where the call runs, so a joblib worker returns the flag with its result. Other
    warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call(*args, **kwargs)
    for warning in caught:
        if not issubclass(warning.category, ConvergenceWarning):
            warnings.warn(warning.message, warning.category, stacklevel=2)
    return result, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def fit_quietly(estimator, X, y, **validation) -> bool:
    """Fit (see quietly); returns whether the fit converged."""
    return quietly(estimator.fit, X, y, **validation)[1]
