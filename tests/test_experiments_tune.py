"""tune on real ELPV features: log grid + refinement, selection never by test, refit on train+val, curve plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

import featx
import featx.experiments.tune
from featx.cache.store import Cache
from featx.cli import main
from featx.compute import Compute
from featx.errors import FeatxError
from featx.experiments.tune import tune
from featx.figures.selection_plots import plot_layer_scores, plot_search_curve
from featx.runs.listing import list_runs as runs
from featx.runs.store import read_log
from featx.selection.cv import make_folds
from featx.selection.metrics import METRICS
from featx.selection.rowspace import row_space as _row_space
from featx.selection.search import search
from featx.selection.spaces import C_PATH, SEARCHES, Search
from featx.selection.spec import Evaluation, FitSpec, tune_specs

from helpers import unwrapped

METRIC_KEYS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")


@pytest.fixture(scope="module")
def data(elpv_cache):
    X, y, meta = featx.load(None, "top_activation", cache=elpv_cache)
    return X, y, meta["split"].to_numpy()


@pytest.fixture(scope="module")
def logreg_on_val(data):
    X, y, split = data
    return search(X, y, split, FitSpec(classifier="logreg", transforms={"standardize": True}), log=lambda *a: None)


def test_logreg_sweeps_the_c_path_then_refines_around_the_best(logreg_on_val):
    result = logreg_on_val
    curve = result.curve
    coarse, refine = curve[curve["stage"] == "coarse"], curve[curve["stage"] == "refine"]
    assert np.allclose(coarse["C"], C_PATH) and len(refine) >= 2  # the grid's own floats (rtol 1e-5)
    best = curve[curve["best"]].iloc[0]
    assert best[result.metric] == curve[curve["stage"] != "default"][result.metric].max()
    coarse_best = coarse.loc[coarse[result.metric].idxmax(), "C"]
    assert (np.abs(np.log10(refine["C"] / coarse_best)) <= 1 + 1e-9).all()
    assert result.metric == "balanced_accuracy" and result.selection == "val"
    assert result.best_params["C"] == pytest.approx(best["C"]) and "warm_start" not in result.best_params  # same float
    default = curve[curve["stage"] == "default"].iloc[0]  # C=1 is on the grid: reused, not refitted
    assert default[result.metric] == coarse.loc[coarse["C"] == 1.0, result.metric].iloc[0]


def test_refit_uses_train_and_val_and_scores_test_once(data, logreg_on_val):
    _, _, split = data
    scaler = logreg_on_val.pipeline.named_steps["standardize"]
    assert scaler.n_samples_seen_ == np.isin(split, ("train", "val")).sum()
    assert set(logreg_on_val.test) == {"accuracy", "balanced_accuracy", "f1_macro", "f1_weighted"}


def test_test_rows_never_reach_selection(data, logreg_on_val):
    X, y, split = data
    poisoned = X.copy()
    test = split == "test"
    poisoned[test] = np.random.default_rng(0).normal(0, 1e3, size=(test.sum(), X.shape[1]))
    again = search(
        poisoned, y, split, FitSpec(classifier="logreg", transforms={"standardize": True}), log=lambda *a: None
    )
    pd.testing.assert_frame_equal(
        again.curve.drop(columns="fit_seconds"), logreg_on_val.curve.drop(columns="fit_seconds")
    )
    assert again.best_params == logreg_on_val.best_params
    assert again.test != logreg_on_val.test  # the poison is seen only where it belongs: the final test score


@pytest.mark.slow
def test_tune_on_cv_beats_defaults_or_is_within_noise(data):
    X, y, split = data
    folds = make_folds(y, split, 4, 1, seed=0)
    result = search(
        X,
        y,
        split,
        FitSpec(classifier="linear-svm", transforms={"discretize": "fne"}),
        folds=folds,
        compute=Compute(workers=2, progress=False),
        log=lambda *a: None,
    )
    versus = result.versus_default
    assert result.selection == "cv4x1" and result.curve["balanced_accuracy_ci95"].notna().all()
    assert versus.mean >= -versus.ci95  # never significantly worse than the defaults it could have picked
    assert versus.verdict.startswith("linear-svm C=") and (
        "beats" in versus.verdict or "within noise" in versus.verdict
    )


def test_rbf_svm_searches_c_and_gamma_relative_to_scale(data):
    X, y, split = data
    space = Search(
        {"C": (0.1, 10.0), "gamma_scale": (0.1, 1.0)}, refine=("C", "gamma_scale"), refine_points=3, refine_decades=0.5
    )
    result = search(X, y, split, FitSpec(classifier="svm"), metric="accuracy", space=space, log=lambda *a: None)
    assert len(result.curve[result.curve["stage"] == "coarse"]) == 4
    assert "gamma" in result.best_params and "gamma_scale" not in result.best_params
    assert 0 < result.best_params["gamma"] < 1


def test_unknown_classifier_or_parameter_is_a_clear_error(data):
    X, y, split = data
    with pytest.raises(FeatxError, match="no search space"):
        search(X, y, split, FitSpec(classifier="knn"), log=lambda *a: None)
    with pytest.raises(FeatxError, match="unknown parameter"):
        search(X, y, split, FitSpec(classifier="rf", params={"min_leaf": 2}), log=lambda *a: None)
    assert set(SEARCHES) == {"logreg", "linear-svm", "svm", "rf", "dense", "nystroem-svm", "sgd", "tail"}


def test_search_curve_png(logreg_on_val, tmp_path):
    path = plot_search_curve(logreg_on_val.curve, tmp_path / "curve.png", ["C"], logreg_on_val.metric)
    width, height = Image.open(path).size
    assert width > 400 and height > 300


def test_layer_scores_png_with_many_layers_ci_and_baselines(tmp_path):
    rng = np.random.default_rng(0)
    layers = [f"block{i}_expand_activation_long_name" for i in range(60)]
    rows = [
        {
            "layers": name,
            "depth": i,
            "classifier": clf,
            "cv_accuracy_mean": 0.6 + 0.003 * i + rng.normal(0, 0.01),
            "cv_accuracy_ci95": 0.03,
        }
        for clf in ("logreg", "rf")
        for i, name in enumerate(layers)
    ]
    rows += [
        {
            "layers": ",".join(layers),
            "depth": np.nan,
            "classifier": "logreg",
            "cv_accuracy_mean": 0.8,
            "cv_accuracy_ci95": 0.02,
        },
        {
            "layers": "all",
            "depth": np.nan,
            "classifier": "majority",
            "cv_accuracy_mean": 0.57,
            "cv_accuracy_ci95": 0.003,
        },
    ]
    path = plot_layer_scores(pd.DataFrame(rows), tmp_path / "layers.png", "cv_accuracy_mean", "cv_accuracy_ci95")
    width, _ = Image.open(path).size
    assert width > 1000
    with pytest.raises(FeatxError, match="no column"):
        plot_layer_scores(pd.DataFrame(rows), tmp_path / "x.png", "cv_f1_macro_mean")


def test_row_space_gives_the_decisions_of_the_wide_features(data):
    X, y, split = data
    train, val = split == "train", split == "val"
    assert X.shape[1] > train.sum()  # 1280 features, 166 train rows: tune takes the row-space path
    Z_train, Z_val = _row_space(X[train], X[val])
    assert Z_train.shape[1] <= train.sum()
    for model in (LogisticRegression(C=0.01, max_iter=5000, tol=1e-8), LinearSVC(C=0.001, tol=1e-8, max_iter=20000)):
        wide = clone(model).fit(X[train], y[train]).decision_function(X[val])
        narrow = clone(model).fit(Z_train, y[train]).decision_function(Z_val)
        # one optimum in two parametrizations, each solver stopped at tol 1e-8 (its gradient's size): the
        # decisions agree to that optimality, far inside 2e-3 of the largest (float64; BLAS order only rounds)
        np.testing.assert_allclose(narrow, wide, atol=2e-3 * np.abs(wide).max())


@pytest.mark.slow
def test_tune_cache_selects_every_classifier_on_the_same_folds_and_saves_curves(elpv_cache):
    lines = []
    results = tune(
        None,
        "top_activation",
        tune_specs("linear-svm,logreg", standardize=True),
        Evaluation(cv=3, fit_on="train+val"),
        cache=elpv_cache,
        compute=Compute(workers=1),
        log=lines.append,
    )
    assert [r.classifier for r in results] == ["linear-svm", "logreg"]
    assert {r.selection for r in results} == {"cv3x1"} and {r.metric for r in results} == {"balanced_accuracy"}
    assert sum("ranking by balanced_accuracy" in line for line in lines) == 1
    folder = Path(lines[-1].split(" in ", 1)[1])
    for clf in ("linear-svm", "logreg"):
        curve = pd.read_csv(folder / f"{clf}_curve.csv")
        assert curve["best"].sum() == 1 and Image.open(folder / f"{clf}_curve.png").size[0] > 400


def test_the_warm_started_c_path_scores_every_point_as_cold_fits_do(digits):
    # issue 22: each fit of tune's C path starts from the previous C's coefficients; at a tight tolerance every point
    # reaches the cold fit's optimum, so its scores, and the C chosen, are the cold path's
    from featx.selection.search import score_points

    X, y, split = digits
    [(train, held), *_] = make_folds(y, split, 3, 1, 0).splits
    points = [{"C": c} for c in (1e-2, 0.1, 1.0)]
    tight = {"tol": 1e-8, "max_iter": 20000}
    warm, cold = (
        score_points(
            FitSpec(classifier="logreg", params=fixed, transforms={"standardize": True}, seed=0),
            points,
            X,
            y,
            train,
            held,
            n_jobs=1,
        )
        for fixed in ({**tight, "warm_start": True}, tight)
    )
    assert all(row["converged"] for row in warm + cold)
    for w, c in zip(warm, cold, strict=True):
        assert {k: w[k] for k in METRIC_KEYS} == {k: c[k] for k in METRIC_KEYS}
    assert max(range(3), key=lambda n: warm[n]["accuracy"]) == max(range(3), key=lambda n: cold[n]["accuracy"])


@pytest.mark.parametrize("transforms", [{}, {"standardize": True}], ids=["as-is", "standardized"])
def test_the_svm_grid_shares_one_kernel_product_per_split_and_scores_as_libsvm(digits, monkeypatch, transforms):
    """issue 36: every (C, gamma) point of a split fits on, and predicts from, one Gram of the split's train and
    held-out rows; without transforms every split's is a slice of one over all folds' rows. The scores are
    scikit-learn's SVC's (solver=libsvm)."""
    import featx.classifiers.gram as gram_module

    X, y, split = digits
    folds = make_folds(y, split, 2, 1, 0)
    space = Search({"C": (1.0, 10.0), "gamma_scale": (0.3, 1.0)})
    products = []
    whole = gram_module.gram_matrix
    monkeypatch.setattr(gram_module, "gram_matrix", lambda rows: products.append(len(rows)) or whole(rows))
    quiet = {"folds": folds, "space": space, "log": lambda *a: None}
    ours = search(X, y, split, FitSpec(classifier="svm", transforms=transforms), **quiet)
    if transforms:  # one per split (its train and held-out rows) in each stage (the grid, then the defaults)
        stages = ours.curve["stage"].unique()
        assert products == [len(train) + len(held) for _ in stages for train, held in folds.splits]
    else:  # one for all
        assert products == [int(np.isin(split, ("train", "val")).sum())]
    products.clear()
    sklearns = search(
        X, y, split, FitSpec(classifier="svm", params={"solver": "libsvm"}, transforms=transforms), **quiet
    )
    assert not products  # scikit-learn's SVC computes its own kernel entries
    columns = ["C", "gamma_scale", *METRIC_KEYS]
    pd.testing.assert_frame_equal(ours.curve[columns], sklearns.curve[columns])
    assert ours.best_params == {k: v for k, v in sklearns.best_params.items() if k != "solver"}


@pytest.mark.slow
def test_tune_cli_logs_the_refit_and_prints_the_selected_line(elpv_cache, tmp_path, capsys):
    code = main(
        [
            "tune",
            "--layers",
            "top_activation",
            "--clf",
            "logreg",
            "--cv",
            "3",
            "--standardize",
            "--cache-dir",
            str(elpv_cache),
            "--runs-dir",
            str(tmp_path),
            "--n-jobs",
            "1",
        ]
    )
    assert code == 0
    last = unwrapped(capsys.readouterr().out).strip().splitlines()[-1]
    table = runs(Cache(None, runs_dir=tmp_path))
    [row] = table.to_dict("records")
    assert last.startswith(f"selected: {row['run_id']} logreg C=") and " balanced_accuracy " in last
    assert f"test acc {row['test_accuracy']:.3f}" in last and " on cv3x1; " in last
    entry = Cache(elpv_cache).open()
    assert row["n_train"] == np.isin(entry.split, ("train", "val")).sum()  # refit on train+val
    assert row["cv"] == "cv3x1" and row["selected_by"] == "cv3x1" and not np.isnan(row["cv_accuracy_ci95"])
    assert np.isnan(row["val_accuracy"])  # val was trained on: no val score is claimed for the refit
    assert list((tmp_path / "reports").glob("tune-*/logreg_curve.png"))


@pytest.mark.slow
def test_tune_on_dask_workers_selects_what_a_local_tune_selects(elpv_cache, tmp_path):
    specs = tune_specs("logreg", standardize=True, seed=2)
    evaluation = Evaluation(cv=3, seed=2, fit_on="train+val")
    where = {"cache": Cache(elpv_cache, runs_dir=tmp_path), "log": lambda *a: None}
    [local] = featx.tune(None, "top_activation", specs, evaluation, compute=Compute(workers=1), **where)
    [remote] = featx.tune(None, "top_activation", specs, evaluation, compute=Compute(cluster="local:2"), **where)
    columns = ["stage", "C", *METRICS, "best"]
    pd.testing.assert_frame_equal(remote.curve[columns], local.curve[columns])
    assert remote.best_params == local.best_params and remote.test == local.test
    assert {local.run_id, remote.run_id} <= set(read_log(Cache(None, runs_dir=tmp_path))["run_id"])
