"""Search a classifier's key parameters on the selection splits, refit the best on train+val, score test once.

The linear-probe protocol of CLIP / DINOv2 / torchgeo-bench: a log grid over the regularization, a finer
grid around the best point, selection on held-out train+val rows, then one refit and one test score.

Transforms (standardize, FNE, PCA) do not depend on the searched parameters, so each selection split
fits them once on its train rows and the whole grid reuses the mapped features; logistic regression
walks its C path with warm starts (each fit starts from the previous C's coefficients). On wide features
(n_features > n_train, e.g. 22k FNE features of all layers) the L2-penalized linear models search in the
row space of the train features instead (featx.selection.rowspace, which compare uses too): same
predictions, n_train columns instead of n_features. Pure functions of arrays: featx.experiments.tune reads
the entry, records the refit and writes the report.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.pipeline import Pipeline
from tqdm.auto import tqdm

from featx.classifiers import make_classifier, make_pipeline
from featx.classifiers.gram import Gram, takes_gram
from featx.classifiers.registry import TAIL
from featx.classifiers.views import ViewEnsemble, training_rows, tta_predict, view_rows
from featx.compute import Compute
from featx.errors import FeatxError
from featx.features.maps import is_streamed
from featx.features.transforms import build_feature_pipeline
from featx.selection.cv import (
    CVResult,
    Difference,
    Folds,
    fit_quietly,
    paired_difference,
    quietly,
    summarize,
    val_folds,
)
from featx.selection.halving import BUDGET_PARAM, contenders, halve_epochs, mark_curve
from featx.selection.metrics import METRICS, SELECTION_SPLITS, check_metric, default_metric, score
from featx.selection.rowspace import ROW_SPACE, fold_threads, for_row_space, row_space
from featx.selection.spaces import SEARCHES, BudgetSearch, Search, budget_search, with_cut_axis
from featx.selection.spec import FitSpec
from featx.terminal import fit_lines


@dataclass
class TuneResult:
    classifier: str
    searched: tuple  # the searched parameter names (curve columns), in grid order
    metric: str  # the selection metric
    selection: str  # "val" or "cv<K>x<R>"
    curve: pd.DataFrame  # one row per point tried: stage, params, METRICS means, <metric>_ci95, fit_seconds,
    #                      converged (no ConvergenceWarning on any split), best
    best_params: dict  # sklearn parameters of the refit (gamma_scale resolved to gamma)
    versus_default: Difference  # best point vs the classifier's default parameters, paired on the same folds
    test: dict | None  # score() of the refit on the test rows; None when there are none
    pipeline: Pipeline  # refit on train+val with best_params
    seconds: float
    folds: Folds | None = None  # the selection splits
    selection_scores: dict = field(default_factory=dict)  # summarize() of the best point on them
    run_id: str | None = None  # the logged refit, when tune_cache recorded it
    not_converged: int = 0  # fits that ended with a ConvergenceWarning (the curve's converged column; the refit)
    fits: int = 0  # fits run: points x splits, and the refit

    selected: CVResult | None = None  # the best point's scores on each selection split (what the run is logged with)
    refit_seconds: float = 0.0  # the refit on train+val alone

    def selection_result(self) -> CVResult | None:
        """The score this model was selected by, as record_run logs it: the CV mean and CI of every metric, or
        (selected on val) the val scores of the best point, fitted on train."""
        return self.selected

    def line(self) -> str:
        """ "<run_id> <clf> <params> <metric> <score> [± ci] on <selection>; <verdict vs defaults>; test acc X"."""
        ci = self.selection_scores[f"{self.metric}_ci95"]
        params = {k: v for k, v in self.best_params.items() if k in self.curve.columns}
        return (
            f"{self.run_id or '-'} {self.classifier} {_label(params)} {self.metric} "
            f"{self.selection_scores[f'{self.metric}_mean']:.3f}"
            + ("" if np.isnan(ci) else f" ± {ci:.3f}")
            + f" on {self.selection}; {self.versus_default.verdict}"
            + (
                f"; test acc {self.test['accuracy']:.3f} {self.metric} {self.test[self.metric]:.3f}"
                if self.test
                else "; no test rows"
            )
        )


def selected_line(results: list[TuneResult]) -> str:
    """ "selected: ..." for the tuned classifier with the best selection score (never the best test score)."""
    best = max(results, key=lambda r: r.selection_scores[f"{r.metric}_mean"])
    return f"selected: {best.line()}"


def convergence_line(results: list[TuneResult]) -> str:
    """One line: how many fits (selection points x splits, and the refit) ended with a ConvergenceWarning."""
    fits, bad = sum(r.fits for r in results), sum(r.not_converged for r in results)
    if not bad:
        return f"convergence: all {fits} fit(s) converged"
    named = ", ".join(f"{r.classifier} {r.not_converged} of {r.fits}" for r in results if r.not_converged)
    return (
        f"convergence: {bad} of {fits} fit(s) stopped at max_iter without converging ({named}; the "
        "curve's converged column names the points); raise max_iter (--param max_iter=N) or standardize"
    )


def search(
    X,
    y,
    split,
    spec: FitSpec,
    *,
    metric: str | None = None,
    folds: Folds | None = None,
    space: Search | BudgetSearch | str | None = None,
    compute: Compute | None = None,
    log=print,
    summary: bool = True,
) -> TuneResult:
    """Search spec's classifier's parameters, select by `metric` on `folds`, refit on train+val, score test once.

    X : ndarray of shape (n_rows, n_features), or (n_rows, V * d) with spec's V views of each image side by side
        (points are trained on every view of the train images and scored from the identity view, or with spec.tta
        the mean over the views; the refit is then a featx.classifiers.views.ViewEnsemble); y, split : ndarrays of
        shape (n_rows,), split in train/val/test.
    spec : the classifier, its fixed params for every fit (e.g. {"class_weight": "balanced"}), its transforms
        (fitted per split), seed, views and tta; the searched parameters are added per point.
    metric : a METRICS name; None = default_metric of the train+val labels (the reason is logged).
    folds : selection splits from make_folds (CV); None = the one train -> val split.
    space : overrides SEARCHES[classifier]; "halving" (or a BudgetSearch) runs successive halving with training
        epochs as the budget instead (classifiers trained by epochs; featx.selection.halving).
    compute : workers = selection splits in parallel (with a single split, the classifier's own n_jobs instead);
        progress = a bar over the fits (points x splits) on stderr when it is a terminal, and a line per stage.
        Default: one split at a time, no bar.
    summary : also log the convergence line (featx.experiments.tune logs one for all classifiers instead).
    The best point's score is optimistic (it won a search); versus_default says whether it beats the
    default parameters beyond the CV noise (with one val split there is no CI: pass folds for one).
    """
    compute = compute or Compute(workers=1, progress=False)
    clf, transforms, params, seed, views, tta = (
        spec.classifier,
        spec.transforms,
        spec.params,
        spec.seed,
        spec.views,
        spec.tta,
    )
    n_jobs, progress, search = compute.parallel, compute.progress, space
    began = time.perf_counter()
    split = np.asarray(split)
    if search == "halving":
        search = budget_search(clf)
    halving = isinstance(search, BudgetSearch)
    if search in (None, "exact") and clf not in SEARCHES:
        raise FeatxError(f"no search space for classifier '{clf}'; tune one of {', '.join(SEARCHES)}")
    search = SEARCHES[clf] if search in (None, "exact") else search
    if clf == TAIL and len(getattr(X, "cuts", ())) > 1 and "cut" not in (params or {}):
        search = with_cut_axis(search, X.cuts)  # X holds the maps of several cuts: the cut is searched too
    if metric is None:
        metric, reason = default_metric(y[np.isin(split, SELECTION_SPLITS)])
        log(reason)
    check_metric(metric)
    folds = folds or val_folds(split)
    transforms, fixed = transforms or {}, {**search.fixed, **(params or {})}
    make_classifier(clf, fixed, seed)  # unknown parameters fail before any fit
    coarse = [dict(zip(search.grid, values)) for values in itertools.product(*search.grid.values())]
    bar = tqdm(
        total=(len(coarse) + 1) * len(folds),
        unit="fit",
        desc=f"tune {clf}",
        file=sys.stderr,
        disable=not progress or not sys.stderr.isatty(),
    )
    run = _Runner(
        clf, X, y, folds, transforms, fixed, seed, n_jobs, len(views), tta, bar, log if progress else None, metric
    )
    if halving:  # the rungs, then the defaults at the full budget; the best contender is chosen
        bar.total = (sum(n for n, _ in search.rungs(len(coarse))) + 1) * len(folds)
        with bar:
            tried, defaults = halve_epochs(run, search, metric, log if progress else None), []
            tried += [{**r, "point": {}} for r in run("default", [{BUDGET_PARAM: search.max_epochs}])]
        best = _best(contenders(tried), metric)
        curve = mark_curve(_curve(tried, folds, metric), tried, metric)
    else:
        with bar:
            tried = run("coarse", coarse)
            defaults = _defaults(clf, coarse, tried)
            bar.total -= len(folds) if defaults else 0
            tried += defaults or run("default", [{}])
            best = _best(tried, metric)
            refined = _refine(search, tried, best)
            if refined:
                bar.total += len(refined) * len(folds)
                tried += run("refine", refined)
                best = _best(tried, metric)
        curve = _curve(tried, folds, metric)
    versus = paired_difference(
        _as_cv(tried, best, folds), _as_cv(tried, {}, folds), metric, f"{clf} {_label(best)}", f"{clf} defaults"
    )
    refit_began = time.perf_counter()
    (pipeline, best_params), refit_converged = quietly(
        _refit, clf, X, y, split, best, transforms, fixed, seed, n_jobs, views, tta
    )
    refit_seconds = time.perf_counter() - refit_began
    test = split == "test"
    scores = score(y[test], pipeline.predict(X[test])) if test.any() else None
    seconds = time.perf_counter() - began
    log(
        fit_lines(
            f"tune {clf}: {len(curve)} point(s) on {folds.label} in {seconds:.1f}s; best {_label(best)} "
            f"{metric} {curve.loc[curve['best'], metric].iloc[0]:.3f}; {versus.verdict}"
            + (f"; test {metric} {scores[metric]:.3f}" if scores else "")
        )
    )
    fitted = [r for r in tried if not (r["stage"] == "default" and defaults)]  # copied default rows ran no fit
    result = TuneResult(
        clf,
        ((BUDGET_PARAM,) if halving else ()) + tuple(search.grid),
        metric,
        folds.label,
        curve,
        best_params,
        versus,
        scores,
        pipeline,
        seconds,
        folds,
        summarize(_as_cv(tried, best, folds)),
        not_converged=sum(not r["converged"] for r in fitted) + (not refit_converged),
        fits=len(fitted) + 1,
        selected=_as_cv(tried, best, folds),
        refit_seconds=refit_seconds,
    )
    if summary:
        log(convergence_line([result]))
    return result


@dataclass
class _Runner:
    """Evaluates a list of points on every selection split (splits in parallel)."""

    clf: str
    X: np.ndarray
    y: np.ndarray
    folds: Folds
    transforms: dict
    fixed: dict
    seed: int
    n_jobs: int | None
    n_views: int = 1
    tta: bool = False
    bar: object = None  # a tqdm bar over the fits, advanced per finished split
    log: object = None  # with a bar: a line per stage
    metric: str = "accuracy"
    gram: object = None  # _folds_gram's (False: none), once decided

    def __call__(self, stage: str, points: list[dict]) -> list[dict]:
        inner = self.n_jobs if len(self.folds) == 1 else 1
        gram = self._folds_gram()
        results = Parallel(n_jobs=1 if len(self.folds) == 1 else self.n_jobs, return_as="generator")(
            delayed(_path)(
                self.clf,
                points,
                self.X,
                self.y,
                train,
                held_out,
                self.transforms,
                self.fixed,
                self.seed,
                inner,
                self.n_views,
                self.tta,
                gram,
            )
            for train, held_out in self.folds.splits
        )
        per_split = []
        for rows in results:
            per_split.append(rows)
            if self.bar is not None:
                self.bar.update(len(points))
        tried = [
            {"stage": stage, "split": i, "point": point, **row}
            for i, rows in enumerate(per_split)
            for point, row in zip(points, rows)
        ]
        if self.log is not None and points and points[0]:
            means = _means(tried, self.metric)
            key = max(means, key=means.get)
            with tqdm.external_write_mode(file=sys.stdout):
                self.log(
                    f"tune {self.clf} {stage}: {len(points)} point(s) x {len(self.folds)} split(s); best "
                    f"{_label(dict(key))} {self.metric} {means[key]:.3f}; "
                    f"{sum(not r['converged'] for r in tried)} fit(s) not converged"
                )
        return tried

    def _folds_gram(self) -> Gram | None:
        """The Gram of every split's rows (labelled by their rows in X), computed once for all stages, when
        the splits fit their rows as they are (no transforms, one view) with a classifier whose fit takes a Gram:
        each split's kernel is then a slice of it. None otherwise, or past the kernel memory budget (each split
        then computes its own)."""
        if self.gram is None:
            self.gram = False
            if not self.transforms and self.n_views == 1 and not is_streamed(self.X):
                rows = np.unique(np.concatenate([part for split in self.folds.splits for part in split]))
                if takes_gram(make_classifier(self.clf, self.fixed, self.seed), len(rows)):
                    self.gram = Gram(self.X[rows], labels=rows).compute()
        return self.gram or None


def score_points(spec: FitSpec, points: list[dict], X, y, train, held_out, *, n_jobs: int | None = 1) -> list[dict]:
    """Each point (parameters added to spec's) fitted on the rows `train` and scored on the rows `held_out`, the
    transforms fitted once (as the search does on each split): one row per point, its METRICS, fit_seconds and
    converged. With warm_start in spec's params, one estimator walks the points in order."""
    return _path(
        spec.classifier,
        points,
        X,
        y,
        train,
        held_out,
        spec.transforms,
        spec.params,
        spec.seed,
        n_jobs,
        len(spec.views),
        spec.tta,
    )


def _path(
    clf, points, X, y, train, held_out, transforms, fixed, seed, n_jobs, n_views=1, tta=False, gram=None
) -> list[dict]:
    """Fit the transforms on the split's train rows once, then every point on the mapped features; with
    warm_start in `fixed`, one estimator walks the points in order, each fit starting from the last.
    With n_views views per row, the fits see every view of the train images as rows (as ViewEnsemble).
    A classifier whose fit takes a Gram (the exact kernel SVM) gets one for all points, and predicts the held-out
    rows from its products with them: `gram` (a Gram labelled by X's rows) at the split's rows when they are
    fitted as they are (no transforms, one view), else one of the split's mapped train and held-out rows.
    Streamed X (the tail's cached maps): _streamed_path."""
    if is_streamed(X):
        return _streamed_path(clf, points, X, y, train, held_out, transforms, fixed, seed, n_jobs, tta)
    with fold_threads(clf):
        return _in_memory_path(clf, points, X, y, train, held_out, transforms, fixed, seed, n_jobs, n_views, tta, gram)


def _in_memory_path(clf, points, X, y, train, held_out, transforms, fixed, seed, n_jobs, n_views, tta, gram):
    steps = Pipeline(build_feature_pipeline(seed=seed, **transforms) or [("identity", "passthrough")])
    prototype = make_classifier(clf, fixed, seed)
    X_fit, y_fit, X_val, y_val = training_rows(prototype, X[train], y[train], n_views)
    held = X[held_out]
    held = view_rows(held, n_views) if tta else held[:, : held.shape[1] // n_views]
    X_train, X_eval = steps.fit_transform(X_fit, y_fit), steps.transform(held)
    validation = {} if X_val is None else {"X_val": steps.transform(X_val), "y_val": y_val}
    wide = clf in ROW_SPACE and X_train.shape[1] > X_train.shape[0]
    if wide:
        X_train, X_eval = row_space(X_train, X_eval)
    shared, cross = {}, {}
    if takes_gram(prototype, len(X_train)):  # one kernel product for every point of the split, held-out rows too
        train_gram, eval_gram = (
            (gram.at(train), gram.at(held_out)) if gram is not None else Gram([X_train, X_eval]).parts()
        )
        shared["gram"], cross["gram"] = train_gram, eval_gram.against(train_gram)
    estimator, rows = None, []
    for point in points:
        values = _resolve(point, X_train)
        began = time.perf_counter()
        if estimator is not None and fixed.get("warm_start") and point:
            estimator.set_params(**values)
        else:
            estimator = make_classifier(clf, {**fixed, **values}, seed, n_jobs)
            if wide:
                for_row_space(estimator)
        converged = fit_quietly(estimator, X_train, y_fit, **validation, **shared)
        seconds = time.perf_counter() - began
        predicted = tta_predict(estimator, X_eval, n_views) if tta else estimator.predict(X_eval, **cross)
        rows.append({**score(y[held_out], predicted), "fit_seconds": seconds, "converged": converged})
        if not point:  # the defaults must not seed the next warm start
            estimator = None
    return rows


def _streamed_path(clf, points, X, y, train, held_out, transforms, fixed, seed, n_jobs, tta) -> list[dict]:
    """_path for maps read from HDF5 as they are used (featx.features.maps.is_streamed; the tail): each point's
    pipeline is fitted on the lazy train rows with all their views (the estimator takes the views and tta itself, as
    in fit and compare) and predicts the held-out rows; nothing holds the maps in memory."""
    rows = []
    for point in points:
        pipeline = make_pipeline(clf, {**fixed, **point}, build_feature_pipeline(seed=seed, **transforms), seed, n_jobs)
        pipeline.set_params(clf__views=X.views, clf__tta=tta)
        began = time.perf_counter()
        converged = fit_quietly(pipeline, X[train], y[train])
        seconds = time.perf_counter() - began
        rows.append(
            {**score(y[held_out], pipeline.predict(X[held_out])), "fit_seconds": seconds, "converged": converged}
        )
    return rows


def _resolve(point: dict, X_train) -> dict:
    """Search parameters -> sklearn parameters (gamma_scale times gamma="scale" of these features)."""
    values = dict(point)
    if "gamma_scale" in values:
        values["gamma"] = values.pop("gamma_scale") / (X_train.shape[1] * max(float(X_train.var()), 1e-12))
    return values


def _defaults(clf: str, coarse: list[dict], tried: list[dict]) -> list[dict]:
    """The default parameters' rows, copied from the grid point equal to them (logreg and linear-svm C=1,
    rf, dense): a second fit of the same model would only cost time. Empty when no grid point matches."""
    defaults = make_classifier(clf).get_params()
    same = [p for p in coarse if all(k in defaults and defaults[k] == v for k, v in p.items())]
    return [{**r, "stage": "default", "point": {}} for r in tried if same and r["point"] == same[0]]


def _key(point: dict) -> tuple:
    return tuple(sorted(point.items()))


def _means(tried: list[dict], metric: str) -> dict:
    table = pd.DataFrame([{"key": _key(r["point"]), metric: r[metric]} for r in tried])
    return table.groupby("key", sort=False)[metric].mean().to_dict()


def _best(tried: list[dict], metric: str) -> dict:
    """The point with the highest mean; the first tried wins ties (coarse grids run from strong to weak
    regularization, so ties go to the simpler model)."""
    means = _means([r for r in tried if r["stage"] != "default"], metric)
    best = max(means, key=means.get)
    return dict(best)


def _refine(search: Search, tried: list[dict], best: dict) -> list[dict]:
    if not search.refine:
        return []
    seen = {_key(r["point"]) for r in tried}
    offsets = np.linspace(-search.refine_decades, search.refine_decades, search.refine_points)
    axes = [[best[p] * 10**o for o in offsets] if p in search.refine else [best[p]] for p in search.grid]
    lows = {p: min(v) for p, v in search.grid.items() if p in search.refine}
    highs = {p: max(v) for p, v in search.grid.items() if p in search.refine}
    points = [
        dict(zip(search.grid, (float(f"{v:.6g}") if p in search.refine else v for p, v in zip(search.grid, values))))
        for values in itertools.product(*axes)
    ]
    return [p for p in points if _key(p) not in seen and all(lows[k] <= p[k] <= highs[k] for k in search.refine)]


def _curve(tried: list[dict], folds: Folds, metric: str) -> pd.DataFrame:
    rows = []
    for key in dict.fromkeys(_key(r["point"]) for r in tried):
        mine = [r for r in tried if _key(r["point"]) == key]
        stats = summarize(CVResult(pd.DataFrame(mine), folds, None))
        rows.append(
            {
                "stage": mine[0]["stage"],
                **dict(key),
                **{m: stats[f"{m}_mean"] for m in METRICS},
                f"{metric}_ci95": stats[f"{metric}_ci95"],
                "fit_seconds": np.mean([r["fit_seconds"] for r in mine]),
                "converged": all(r["converged"] for r in mine),
            }
        )
    curve = pd.DataFrame(rows)
    candidates = curve[curve["stage"] != "default"][metric]
    curve["best"] = curve.index == candidates.idxmax()
    return curve


def _as_cv(tried: list[dict], point: dict, folds: Folds) -> CVResult:
    mine = [r for r in tried if _key(r["point"]) == _key(point)]
    return CVResult(pd.DataFrame(mine), folds, None)


def _refit(clf, X, y, split, best, transforms, fixed, seed, n_jobs, views=("id",), tta=False) -> tuple[Pipeline, dict]:
    rows = np.isin(split, SELECTION_SPLITS)
    steps = build_feature_pipeline(seed=seed, **transforms)
    values = best
    if "gamma_scale" in best:  # gamma from the rows the classifier is fitted on: one view each, as in the search
        mapped = Pipeline(build_feature_pipeline(seed=seed, **transforms) or [("identity", "passthrough")])
        n_views = len(views)
        values = _resolve(best, mapped.fit_transform(view_rows(X[rows], n_views), np.repeat(y[rows], n_views)))
    params = {**{k: v for k, v in fixed.items() if k != "warm_start"}, **values}
    pipeline = make_pipeline(clf, params, steps, seed, n_jobs)
    if is_streamed(X):  # the tail reads its maps as it trains and takes its views itself
        pipeline.set_params(clf__views=tuple(views), clf__tta=tta)
    elif tuple(views) != ("id",) or tta:
        pipeline = ViewEnsemble(pipeline, views=views, tta=tta)
    return pipeline.fit(X[rows], y[rows]), params


def _label(point: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()) or "defaults"
