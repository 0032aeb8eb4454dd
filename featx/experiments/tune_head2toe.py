"""Head2Toe's recipe tuned by cross-validation: `featx tune --select group-lasso`.

Searches T (one cache entry per `--pool grid:T`, or avg), the group-lasso penalty, the kept fraction F and the final
linear head's C, selecting on val or by CV over train+val; refits the choice on train+val, scores test once, logs
that run (with its kept-features-per-layer plot) and saves the search curve as other tunes do.

Work is shared where the numbers stay the same: per split, the layer normalization is per sample and the group-lasso
ranking depends on the penalty only, so each (entry, split, penalty) fits one selector on the split's train rows and
every F is a cut of its ranking; each F then walks the C path as `tune` does (warm starts, the row space of the
train rows on wide features). Nothing of a split's held-out rows, nor of test, enters any fit.

With cached views (`views`, `tta`), every step is fitted as the refit's ViewEnsemble fits it: the layer
normalization, the scaler, the ranking and the head see every view of a split's train images as rows of their own
(the ranking cuts one view's columns, the same in every view), folds and splits are of images, and the held-out
images are scored from the identity view or, with tta, from the mean over their views.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from featx.cache.store import Cache
from featx.classifiers.views import view_rows
from featx.errors import FeatxError
from featx.experiments.inputs import check_trainable
from featx.features.head2toe import GroupLassoSelector, LayerNormalizer, layer_blocks, parse_select
from featx.features.load import check_views_cached, load
from featx.features.options import GROUP_LASSO
from featx.progress import silent
from featx.runs.record import record_run
from featx.runs.reports import curve_files, new_report_folder, write_tune_report
from featx.runs.store import prepare_log
from featx.selection.cv import CVResult, make_folds, summarize, val_folds
from featx.selection.metrics import METRICS, SELECTION_SPLITS, check_metric, default_metric
from featx.selection.search import score_points
from featx.selection.spec import Evaluation, FitSpec, Head2ToeSearch, fit_spec
from featx.selection.train import train_and_score

PENALTIES = (0.1, 0.03)
FRACTIONS = (0.01, 0.03, 0.1, 0.3)
C_GRID = tuple(float(c) for c in np.logspace(-3, 5, 9))
SEARCHED = ("C", "entry", "penalty", "fraction")


@dataclass
class Head2ToeResult:
    curve: pd.DataFrame  # one row per (entry, penalty, fraction, C): METRICS means, <metric>_ci95, fit_seconds, best
    best: dict  # entry, pool, penalty, fraction, C
    metric: str
    selection: str  # "val" or "cv<K>x<R>"
    selection_scores: dict  # summarize() of the best point on the selection splits
    test: dict | None  # the refit's test metrics (featx.selection.metrics.evaluate), scored once
    run_id: str
    kept: pd.DataFrame | None  # kept features per layer of the refit (featx.figures.kept_layers.kept_table)
    folder: Path  # the report folder: head2toe_curve.csv/.png
    seconds: float
    fits: int = 0
    timings: dict = field(default_factory=dict)  # {"select": s, "head": s}
    classifier: str = "head2toe"  # the curve's name in the report folder (head2toe_curve.csv), as tune's <clf>
    views: tuple = ("id",)  # the views trained on (identity first)
    tta: bool = False  # held-out images scored from the mean over their views

    def line(self) -> str:
        b, s = self.best, self.selection_scores
        ci = s[f"{self.metric}_ci95"]
        return (
            f"{self.run_id} head2toe {b['entry']} ({b['pool']}) penalty={b['penalty']:g} fraction={b['fraction']:g} "
            f"C={b['C']:.3g} {self.metric} {s[f'{self.metric}_mean']:.3f}"
            + ("" if np.isnan(ci) else f" ± {ci:.3f}")
            + ("" if self.views == ("id",) else f" views={','.join(self.views)}" + (" (tta)" if self.tta else ""))
            + f" on {self.selection}"
            + (
                f"; test acc {self.test['accuracy']:.3f} f1_macro {self.test['f1_macro']:.3f}"
                if self.test
                else "; no test rows"
            )
        )


def tune_head2toe(
    entry=None,
    layers=None,
    recipe: Head2ToeSearch | None = None,
    evaluation: Evaluation | None = None,
    *,
    command: str | None = None,
    cache=None,
    log=print,
) -> Head2ToeResult:
    """Select T (the entry), the group-lasso penalty, the fraction F and the head's C; refit, test once, log.

    entry : one entry or a list of entries of the same images (of `cache`), each a candidate (e.g. one per
        --pool grid:T); the runs and the report go to the first one's runs folder.
    recipe : what is searched (featx.selection.spec.Head2ToeSearch): select "group-lasso" searches its fractions
        (default FRACTIONS), "group-lasso:F" fixes F; penalties (default PENALTIES); the head's C path Cs (default
        C_GRID), walked with warm starts; the head's fixed params; normalize ("layer": Head2Toe's per-layer L2) and
        standardize (a StandardScaler after it, fitted per split); seed; views and tta (the views must be cached in
        every entry: each point is fitted on every view of its train images, folds are of images, held-out images
        are scored from the identity view or with tta from the mean over their views; the refit is a ViewEnsemble).
    evaluation : cv (K for repeated stratified K-fold over train+val, cv_repeats times; None: train -> val) and the
        metric (None: chosen from the class balance). command : kept in the report folder.
    """
    recipe, evaluation = recipe or Head2ToeSearch(), evaluation or Evaluation()
    cv, cv_repeats, metric = evaluation.cv, evaluation.cv_repeats, evaluation.metric
    seed, normalize, tta = recipe.seed, recipe.normalize, recipe.tta
    began, log = time.perf_counter(), log or silent
    resolved = replace(  # the grids searched
        recipe,
        penalties=tuple(recipe.penalties or PENALTIES),
        fractions=_fractions(recipe.select, recipe.fractions),
        Cs=tuple(recipe.Cs or C_GRID),
    )
    view_list = tuple(recipe.views)
    n_views = len(view_list)
    plain = view_list == ("id",) and not tta
    entries = Cache.resolve(cache).open_all(entry)
    for entry in entries:
        check_trainable(entry, cv=cv, selects=True)
        if not plain:
            check_views_cached(entry, layers, view_list)
    prepare_log(entries[0].cache)
    fixed = {"max_iter": 2000, **recipe.params, "warm_start": True}
    rows, timings, fits, loaded = [], {"select": 0.0, "head": 0.0}, 0, {}
    for entry in entries:
        features = load(entry, layers=layers, views=None if plain else view_list)
        X, y, meta = features
        width = X.shape[1] // n_views  # one view's columns
        split = meta["split"].to_numpy()
        if metric is None:
            metric, reason = default_metric(y[np.isin(split, SELECTION_SPLITS)])
            log(reason)
        check_metric(metric)
        folds = make_folds(y, split, cv, cv_repeats, evaluation.seed) if cv else val_folds(split)
        blocks = layer_blocks(features.feature_slices)
        loaded[entry.name] = (features.selection, blocks)
        del features
        for s, (train, held_out) in enumerate(folds.splits):
            found, _ = search_split(X, y, train, held_out, resolved, blocks=blocks, timings=timings)
            fits += len(found)
            rows += [{"entry": entry.name, "pool": entry.settings["pool"], **r, "split": s} for r in found]
            log(
                f"head2toe: {entry.name} ({entry.settings['pool']}, {width} features"
                + ("" if plain else f" x {n_views} views" + (", tta" if tta else ""))
                + f") split {s + 1}/{len(folds)} "
                f"done ({time.perf_counter() - began:.0f}s)"
            )
        del X
    tried = pd.DataFrame(rows)
    curve = _curve(tried, folds, metric)
    best = curve[curve["best"]].iloc[0].to_dict()
    mine = tried[
        (tried["entry"] == best["entry"])
        & (tried["penalty"] == best["penalty"])
        & (tried["fraction"] == best["fraction"])
        & (tried["C"] == best["C"])
    ]
    selected = CVResult(mine.reset_index(drop=True), folds, None)
    selection_scores = summarize(selected)
    entry = next(e for e in entries if e.name == best["entry"])
    selection, blocks = loaded[entry.name]
    transforms = {
        "normalize": normalize,
        "standardize": recipe.standardize or None,
        "select": f"{GROUP_LASSO}:{best['fraction']:g}",
        "select_penalty": float(best["penalty"]),
        "blocks": blocks,
    }
    transforms = {k: v for k, v in transforms.items() if v is not None}
    spec = fit_spec(
        "logreg",
        params={**{k: v for k, v in fixed.items() if k != "warm_start"}, "C": float(best["C"])},
        seed=seed,
        n_jobs=1,
        views=view_list,
        tta=tta,
        **transforms,
    )
    X, y, meta = load(entry, layers=layers, views=None if plain else view_list)
    split = meta["split"].to_numpy()
    refit_split = np.where(np.isin(split, SELECTION_SPLITS), "train", split)  # train+val, test scored once
    scores = train_and_score(X, y, refit_split, spec, class_names=entry.class_names, eval_splits=("test",))
    evaluation = Evaluation(cv=cv, cv_repeats=cv_repeats, metric=metric, seed=evaluation.seed, fit_on="train+val")
    run = record_run(entry, spec, scores, selection=selection, log=log, cv=selected, evaluation=evaluation)
    folder = new_report_folder(entries[0].cache, "tune")
    _write_curves(folder, curve, metric, folds.label)
    from featx.figures.kept_layers import KEPT_CSV

    kept = pd.read_csv(run.folder / KEPT_CSV) if (run.folder / KEPT_CSV).is_file() else None
    result = Head2ToeResult(
        curve,
        {k: best[k] for k in ("entry", "pool", "penalty", "fraction", "C")},
        metric,
        folds.label,
        selection_scores,
        scores.metrics.get("test"),
        run.run_id,
        kept,
        folder,
        time.perf_counter() - began,
        fits + 1,
        timings,
        views=view_list,
        tta=tta,
    )
    write_tune_report(  # as tune's: `featx report` reads it back
        folder,
        entries[0],
        metric=result.metric,
        selection=result.selection,
        run_ids={result.classifier: result.run_id},
        command=command,
    )
    log(
        f"head2toe: {len(curve)} point(s) x {len(folds)} split(s) in {result.seconds:.0f}s (selection fits "
        f"{timings['select']:.0f}s, heads {timings['head']:.0f}s); saved search curve in {folder}"
    )
    return result


def search_split(
    X, y, train, held_out, recipe: Head2ToeSearch, *, blocks, timings: dict | None = None
) -> tuple[list[dict], dict]:
    """Every (penalty, F, C) of `recipe` on one split: fitted on the rows `train`, scored on the rows `held_out`.

    X : ndarray (n_images, n_views * d), each image's views side by side (featx.load with recipe's views); y :
    (n_images,). train, held_out : row indices of images. recipe : its penalties, fractions and Cs (None: the
    defaults), the head's fixed LogisticRegression params (one head walks the C path with warm starts), normalize,
    standardize, seed, views and tta. blocks : one view's layer layout (layer_blocks).
    Returns the rows (penalty, fraction, C, kept, the METRICS, fit_seconds, converged), one per point, and the
    ranking of one view's columns per penalty ({penalty: ndarray (d,)}, best first), fitted on every view of the
    train images only; held-out images are scored from the identity view, or with tta the mean over their views.
    """
    normalize, standardize, n_views = recipe.normalize, recipe.standardize, len(recipe.views)
    penalties, Cs = recipe.penalties or PENALTIES, recipe.Cs or C_GRID
    fractions = recipe.fractions or _fractions(recipe.select, None)
    fixed = {"max_iter": 2000, **recipe.params, "warm_start": True}
    timings = {"select": 0.0, "head": 0.0} if timings is None else timings
    width = X.shape[1] // n_views
    X_split = _prepared(X, train, blocks, normalize, standardize, n_views)
    rows, rankings = [], {}
    for penalty in penalties:
        t = time.perf_counter()
        selector = GroupLassoSelector(fraction=1.0, penalty=penalty, blocks=blocks).fit(
            view_rows(X_split[train], n_views), np.repeat(y[train], n_views)
        )
        timings["select"] += time.perf_counter() - t
        rankings[penalty] = selector.ranking_
        for fraction in fractions:
            columns = np.sort(selector.ranking_[: _n_keep(fraction, width)])
            in_views = (columns + width * np.arange(n_views)[:, None]).ravel()  # the same columns in every view
            t = time.perf_counter()
            path = score_points(
                FitSpec(
                    classifier="logreg", params=fixed, seed=recipe.seed, n_jobs=1, views=recipe.views, tta=recipe.tta
                ),
                [{"C": c} for c in Cs],
                X_split[:, in_views],
                y,
                train,
                held_out,
            )
            timings["head"] += time.perf_counter() - t
            rows += [
                {"penalty": penalty, "fraction": fraction, "C": c, "kept": len(columns), **r} for c, r in zip(Cs, path)
            ]
    return rows, rankings


def _fractions(select, fractions) -> tuple:
    if fractions is not None:
        return tuple(float(f) for f in fractions)
    text = str(select or GROUP_LASSO)
    if not text.startswith(GROUP_LASSO):
        raise FeatxError(f"tune --select {select}: only group-lasso (searches F) or group-lasso:F is tuned")
    return FRACTIONS if text == GROUP_LASSO else (parse_select(text),)


def _n_keep(fraction: float, n_features: int) -> int:
    return max(1, int(round(fraction * n_features)))  # as GroupLassoSelector keeps them


def _prepared(X, train, blocks, normalize, standardize, n_views: int = 1) -> np.ndarray:
    """X (n_images, n_views * d) with the steps before the selection fitted on every view of the split's train
    images, as a ViewEnsemble fits them (the layer L2 is per sample; the scaler is not), applied to every view."""
    out = view_rows(X, n_views)  # (n_images * n_views, d), image by image
    if normalize == "layer":
        out = LayerNormalizer(blocks=blocks).fit(view_rows(X[train], n_views)).transform(out)
    if standardize:
        from sklearn.preprocessing import StandardScaler

        out = StandardScaler().fit(view_rows(out.reshape(len(X), -1)[train], n_views)).transform(out)
    return out.reshape(len(X), -1)


def _curve(tried: pd.DataFrame, folds, metric: str) -> pd.DataFrame:
    keys = ["entry", "pool", "penalty", "fraction", "C"]
    rows = []
    for key, group in tried.groupby(keys, sort=False):
        stats = summarize(CVResult(group.reset_index(drop=True), folds, None))
        rows.append(
            {
                "stage": "coarse",
                **dict(zip(keys, key)),
                "kept": int(group["kept"].iloc[0]),
                **{m: stats[f"{m}_mean"] for m in METRICS},
                f"{metric}_ci95": stats[f"{metric}_ci95"],
                "fit_seconds": float(group["fit_seconds"].mean()),
                "converged": bool(group["converged"].all()),
            }
        )
    curve = pd.DataFrame(rows)
    curve["best"] = curve.index == curve[metric].idxmax()  # ties: the first tried (strongest penalty, fewest kept)
    return curve


def _write_curves(folder: Path, curve: pd.DataFrame, metric: str, selection: str) -> None:
    """head2toe_curve.csv (every point) and head2toe_curve.png (the best C of each entry, penalty and fraction,
    against the fraction), as tune writes <clf>_curve.csv/.png."""
    from featx.figures.selection_plots import plot_search_curve

    with curve_files(folder, "head2toe") as (csv, png):
        curve.to_csv(csv, index=False)
        by = ["entry", "pool", "penalty", "fraction"]
        reduced = curve.loc[curve.groupby(by, sort=False)[metric].idxmax()].reset_index(drop=True)
        reduced["T"] = reduced["pool"]
        reduced["best"] = reduced[metric] == reduced[metric].max()
        reduced.loc[reduced["best"].cumsum() > 1, "best"] = False
        plot_search_curve(
            reduced,
            png,
            ("fraction", "T", "penalty"),
            metric,
            title=f"head2toe: {metric} on {selection} (best C per point)",
        )
