"""compare's shared work (issue 22) gives the estimator's own numbers, on real ELPV features (elpv_cache):
folds fit as the cold Pipeline does (on one BLAS thread wherever they run), row-space fits reach its optimum, the
exact path's best row does not change, successive halving finds the exact best (or a row within its noise),
ConvergenceWarnings become one counted line, and the command prints a line per row as it finishes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

import featx
import featx.experiments.tune
from featx.cache.store import Cache, CacheEntry
from featx.compute import Compute
from featx.errors import FeatxError
from featx.experiments.compare import compare
from featx.features.load import load
from featx.runs.store import read_log
from featx.selection.cv import make_folds
from featx.selection.metrics import METRICS
from featx.selection.search import search
from featx.selection.spec import FitSpec, compare_specs
from featx.selection.train import fit_fold

from helpers import log_size, unwrapped

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"log": None, "progress": False}
NARROW = "block2b_add"  # 24 features: fewer than a fold's rows, so no row space
TIGHT = {"tol": 1e-10, "max_iter": 20000}


@pytest.fixture(scope="module")
def features(elpv_cache):
    entry = Cache(elpv_cache).open()
    loaded = load(entry, "blocks")
    X, y, meta = loaded
    split = meta["split"].to_numpy()
    narrow = np.arange(*loaded.feature_slices[NARROW])
    return X, y, split, narrow, make_folds(y, split, 5, 1, 0)


def _cold_and_reused(spec, X, y, train, held):
    cold, X_cold, _ = fit_fold(spec, X[train], y[train], X[held], reuse=False)
    reused, X_reused, _ = fit_fold(spec, X[train], y[train], X[held], reuse=True)
    return cold, X_cold, reused, X_reused


def test_reused_logreg_folds_are_the_cold_pipelines_fits_bit_for_bit(features):
    """Narrow features, the default tolerance: a fold compare (and fit) scores is the spec's Pipeline fitted cold,
    the same arithmetic. Until 2026-12-07 these folds started from the train solution, which had seen the held-out
    rows, and stopped within the tolerance on its side (featx.selection.train's note: CV 0.27 points optimistic)."""
    X, y, split, narrow, folds = features
    X = X[:, narrow]
    spec = FitSpec(classifier="logreg", transforms={"standardize": True}, n_jobs=1)
    for train, held in folds.splits:
        cold, X_cold, reused, X_reused = _cold_and_reused(spec, X, y, train, held)
        assert np.array_equal(X_reused, cold[:-1].transform(X[held]))  # the transforms fitted once, as the Pipeline
        assert not reused.warm_start and reused.n_iter_.sum() == cold[-1].n_iter_.sum()
        np.testing.assert_array_equal(reused.coef_, cold[-1].coef_)
        np.testing.assert_array_equal(reused.intercept_, cold[-1].intercept_)


@pytest.mark.parametrize("clf", ["logreg", "linear-svm"])
def test_row_space_folds_decide_like_the_wide_features(features, clf):
    X, y, split, narrow, folds = features
    assert X.shape[1] > 1000  # blocks: 1,808 features, more than a fold's ~160 rows
    X = X.astype(np.float64)
    spec = FitSpec(classifier=clf, params=TIGHT, transforms={"standardize": True}, n_jobs=1)
    for train, held in folds.splits[:2]:  # the cold fits at this tolerance take a while
        with threadpool_limits(1):  # one BLAS thread: much faster for these small solves on a busy machine
            cold, X_cold, fast, X_fast = _cold_and_reused(spec, X, y, train, held)
        assert X_fast.shape[1] <= len(train) < X.shape[1]  # solved in the row space
        expected = cold.decision_function(X_cold)
        # one optimum in two parametrizations at tol 1e-10: decisions agree far inside 1e-3 of the largest
        np.testing.assert_allclose(fast.decision_function(X_fast), expected, atol=1e-3 * np.abs(expected).max())
        np.testing.assert_array_equal(fast.predict(X_fast), cold.predict(X_cold))


def test_a_linear_models_fold_is_the_same_bits_on_one_blas_thread_or_two(features):
    """fold_threads: compare's joblib workers (one BLAS thread each) and `featx fit`'s own process (every thread)
    fit a fold to the same coefficients. Without it, OpenBLAS's threaded eigh in the row space (163 rows) sums in
    another order on two threads and every fold's coefficients differed (measured on the 2-core VM, 2026-12-07)."""
    X, y, split, narrow, folds = features
    spec = FitSpec(classifier="logreg", transforms={"standardize": True}, n_jobs=1)
    for train, held in folds.splits:
        fits = []
        for threads in (1, 2):
            with threadpool_limits(threads, user_api="blas"):
                fitted, X_eval, _ = fit_fold(spec, X[train], y[train], X[held], reuse=True)
            fits.append((fitted.coef_, fitted.intercept_))
        assert X_eval.shape[1] <= len(train)  # solved in the row space
        np.testing.assert_array_equal(fits[0][0], fits[1][0])
        np.testing.assert_array_equal(fits[0][1], fits[1][1])


LAYER_SETS = ["top_activation", "blocks", NARROW]
SPECS = {"classifiers": "logreg,linear-svm", "standardize": True, "seed": 0}
FOLDS = {"cv": 5, "seed": 0}


@pytest.fixture(scope="module")
def exact_and_cold(elpv_cache, tmp_path_factory):
    runs = tmp_path_factory.mktemp("speed_runs")
    exact = featx.compare(
        None,
        LAYER_SETS,
        featx.compare_specs(**SPECS),
        featx.Evaluation(**FOLDS),
        cache=featx.Cache(elpv_cache, runs_dir=runs),
        compute=featx.Compute(progress=False),
        log=None,
    )
    cold = featx.compare(
        None,
        LAYER_SETS,
        featx.compare_specs(**SPECS),
        featx.Evaluation(**FOLDS),
        cache=featx.Cache(elpv_cache, runs_dir=runs),
        compute=featx.Compute(workers=1, progress=False, reuse=False),
        log=None,
    )
    return exact, cold


def test_reused_work_keeps_every_row_score_and_the_best_row(exact_and_cold):
    exact, cold = exact_and_cold
    assert exact.best_line.split(";")[0] == cold.best_line.split(";")[0]
    key = ["layers", "model"]
    merged = exact.table.merge(cold.table, on=key, suffixes=("", "_cold"))
    assert len(merged) == len(exact.table) == 8  # 3 subsets x 2 classifiers + 2 baselines
    column = f"cv_{exact.metric}_mean"
    same = merged["layers"].isin([NARROW, "(baseline)"])  # no row space: the cold fits' own arithmetic
    assert same.sum() == 4 and (merged.loc[same, column] == merged.loc[same, f"{column}_cold"]).all()
    # row space: the same optimum within the solvers' default tolerance, one held-out image of ~40 decides otherwise
    assert np.abs(merged[column] - merged[f"{column}_cold"]).max() <= 0.03, merged[[*key, column, f"{column}_cold"]]
    assert (merged["val_accuracy"] == merged["val_accuracy_cold"]).all()  # the train fits are the same code


def test_halving_finds_the_exact_best_or_a_row_within_its_noise(elpv_cache, exact_and_cold, tmp_path):
    exact, _ = exact_and_cold
    lines = []
    halving = featx.compare(
        None,
        LAYER_SETS,
        featx.compare_specs(**SPECS),
        featx.Evaluation(**FOLDS, search="halving"),
        cache=featx.Cache(elpv_cache, runs_dir=tmp_path),
        compute=featx.Compute(progress=False),
        log=lines.append,
    )
    table = halving.table
    assert halving.fits < exact.fits
    finished, stopped = table[~table["stopped_early"]], table[table["stopped_early"]]
    assert len(stopped) and (stopped["folds_scored"] < 5).all() and stopped["run_id"].isna().all()
    assert (finished["folds_scored"] == 5).all() and finished["run_id"].notna().all()
    assert list(table["stopped_early"]) == sorted(table["stopped_early"])  # rows that had every fold come first
    assert sum("stopped at 1/5 fold(s)" in line for line in lines) == (stopped["folds_scored"] == 1).sum()
    winner = table.iloc[0][["layers", "model"]].tolist()
    best = exact.table.iloc[0][["layers", "model"]].tolist()
    if winner != best:  # then the exact run must call the two within noise
        entry = Cache(elpv_cache).open()
        rows = exact.table.set_index(["layers", "model"])
        assert rows.loc[tuple(winner), "cv_folds"] == rows.loc[tuple(best), "cv_folds"]
        diff = rows.loc[tuple(best), f"cv_{exact.metric}_mean"] - rows.loc[tuple(winner), f"cv_{exact.metric}_mean"]
        assert diff <= rows.loc[tuple(best), f"cv_{exact.metric}_ci95"], (entry.name, winner, best)
    on_same_folds = finished.set_index(["layers", "model"])[f"cv_{exact.metric}_mean"]
    for key, value in on_same_folds.items():  # a contender's full CV is the exact run's number for that row: the
        assert value == exact.table.set_index(["layers", "model"]).loc[key, f"cv_{exact.metric}_mean"]  # same fits


def test_halving_needs_cv(elpv_cache, tmp_path):
    with pytest.raises(FeatxError, match="needs cross-validation"):
        featx.compare(
            None,
            ["top_activation"],
            featx.compare_specs("logreg"),
            featx.Evaluation(search="halving"),
            cache=featx.Cache(elpv_cache, runs_dir=tmp_path),
            compute=featx.Compute(progress=False),
            log=None,
        )


def test_a_subset_named_twice_is_fitted_once_and_both_rows_get_its_scores(elpv_cache, tmp_path):
    # "each" repeats a layer also named on its own (top_activation in the standard comparison): the same fits
    result = featx.compare(
        None,
        [NARROW, NARROW],
        featx.compare_specs("logreg", standardize=True),
        featx.Evaluation(cv=3),
        cache=featx.Cache(elpv_cache, runs_dir=tmp_path),
        compute=featx.Compute(progress=False),
        log=None,
    )
    rows = result.table[result.table["classifier"] == "logreg"]
    assert len(rows) == 2 and rows["run_id"].nunique() == 2  # both rows are logged, each as its own run
    assert rows[f"cv_{result.metric}_mean"].nunique() == 1 and rows["val_accuracy"].nunique() == 1
    assert result.fits == 3 * (1 + 3)  # one logreg row and the two baselines, each a train fit and 3 folds


@pytest.mark.parametrize("transforms", [{"standardize": True}, {}], ids=["standardized", "as-is"])
def test_the_svm_rows_of_a_split_share_one_kernel_product_and_keep_scikit_learns_scores(
    elpv_cache, tmp_path, monkeypatch, transforms
):
    """issue 36: compare's svm grid (C x gamma) on a layer subset computes one Gram for the train split and one per
    fold, however many rows; without transforms one for all, each fit's kernel a slice of it. Every score is that
    of fits computing their own kernels (reuse=False) and of scikit-learn's SVC (solver=libsvm)."""
    import featx.classifiers.gram as gram_module

    products = []
    whole = gram_module.gram_matrix
    monkeypatch.setattr(gram_module, "gram_matrix", lambda rows: products.append(len(rows)) or whole(rows))
    grid = {"C": [10.0], "gamma": [2e-4, 1e-3] if transforms else [4e-5, 2e-4]}  # around "scale" of each
    cache = featx.Cache(elpv_cache, runs_dir=tmp_path)

    def svm_compare(reuse=True, **params):
        specs = featx.compare_specs("svm", grid=grid, params=params, **transforms)
        compute = featx.Compute(workers=1, progress=False, reuse=reuse)
        return featx.compare(None, ["blocks"], specs, featx.Evaluation(cv=3), cache=cache, compute=compute, log=None)

    shared = svm_compare()
    _, y, meta = load(Cache(elpv_cache).open(), layers="top_activation")
    split = meta["split"].to_numpy()
    folds = make_folds(y, split, 3, 1, 0)
    if transforms:
        assert products == [int((split == "train").sum())] + [len(train) for train, _ in folds.splits]
    else:
        assert products == [int(np.isin(split, ("train", "val")).sum())]
    products.clear()
    cold = svm_compare(reuse=False)
    libsvm = svm_compare(solver="libsvm")
    assert not products
    scores = [f"cv_{shared.metric}_mean", "val_accuracy", "test_accuracy", "val_f1_macro"]
    tables = [t.table.set_index(["layers", "model"]).sort_index()[scores] for t in (shared, cold, libsvm)]
    assert len(tables[0]) == 4  # two svm rows and the two baselines
    pd.testing.assert_frame_equal(tables[0], tables[1])
    pd.testing.assert_frame_equal(tables[0], tables[2])


def _env() -> dict:
    """The environment of a `featx` process with this checkout first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _featx_process(*args) -> subprocess.CompletedProcess:
    """`python -m featx ARGS` in a new process (_env), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "featx", *map(str, args)], capture_output=True, text=True, env=_env(), timeout=600
    )


# a standardized logistic regression stopped at 3 iterations, under 3-fold CV: its fits end unconverged
STOPPED_LOGREG = ("--clf", "logreg", "--param", "max_iter=3", "--cv", "3", "--standardize")


def test_non_converged_fits_are_one_counted_line_not_a_scroll_of_warnings(elpv_cache, tmp_path):
    done = _featx_process(
        "compare",
        "--cache-dir",
        str(elpv_cache),
        "--runs-dir",
        str(tmp_path),
        "--layer-sets",
        "top_activation",
        NARROW,
        *STOPPED_LOGREG,
    )
    assert done.returncode == 0, done.stderr
    assert "ConvergenceWarning" not in done.stderr and "converge" not in done.stderr, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("convergence: ")]
    assert line.startswith("convergence: 8 of 16 fit(s) stopped at max_iter without converging, in 2 row(s)"), line
    rows = [line for line in done.stdout.splitlines() if line.startswith("row ")]
    assert len(rows) == 4 and all(" on 3 fold(s)" in row for row in rows)  # one line per row, as it finished
    assert sum("4 of 4 fit(s) not converged" in row for row in rows) == 2
    saved = pd.read_csv(done.stdout.strip().splitlines()[-1].split("saved ")[1].split(" and ")[0])
    assert saved.set_index("classifier").loc["logreg", "not_converged"].tolist() == [4, 4]
    assert saved.set_index("classifier").loc["majority", "not_converged"] == 0


def test_a_fit_that_does_not_converge_is_one_note_not_warnings(elpv_cache, tmp_path):
    done = _featx_process(
        "fit",
        "--cache-dir",
        str(elpv_cache),
        "--runs-dir",
        str(tmp_path),
        "--layers",
        NARROW,
        *STOPPED_LOGREG,
    )
    assert done.returncode == 0, done.stderr
    assert "ConvergenceWarning" not in done.stderr and "converge" not in done.stderr, done.stderr
    [note] = [line for line in done.stdout.splitlines() if "without converging" in line]
    assert note.startswith("note: 4 fit(s) of 4 stopped at max_iter without converging"), note  # 3 folds + the fit


def test_tune_counts_non_converged_fits_in_one_line(features):
    from featx.selection.spaces import Search

    X, y, split, narrow, folds = features
    lines = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = search(
            X[:, narrow],
            y,
            split,
            FitSpec(classifier="logreg", params={"max_iter": 2}, transforms={"standardize": True}),
            folds=folds,
            space=Search({"C": (0.01, 1.0, 100.0)}),
            compute=Compute(workers=1, progress=False),
            log=lines.append,
        )
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    # 3 points and the defaults (C=1, copied from the grid: no fit) on 5 splits, and the refit on train+val
    assert result.fits == 3 * 5 + 1 and 1 < result.not_converged <= result.fits
    assert (~result.curve["converged"]).any()
    assert [line for line in lines if line.startswith("convergence: ")] == [
        f"convergence: {result.not_converged} of {result.fits} fit(s) stopped at max_iter without "
        f"converging (logreg {result.not_converged} of {result.fits}; the curve's converged column names the points); "
        "raise max_iter (--param max_iter=N) or standardize"
    ]


def _stderr_on_a_terminal(*args) -> tuple[int, str, str]:
    """Run `featx ARGS` with stderr on a pseudo-terminal (120 columns): (exit code, stdout, what the terminal got)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = _env()
    process = subprocess.Popen(
        [sys.executable, "-m", "featx", *map(str, args)], stdout=subprocess.PIPE, stderr=follower, env=env, text=True
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    out = process.stdout.read()
    code = process.wait(timeout=600)
    os.close(leader)
    return code, out, b"".join(chunks).decode(errors="replace")


def test_a_progress_bar_with_eta_on_a_terminal_and_none_with_quiet(elpv_cache, tmp_path):
    args = [
        "compare",
        "--cache-dir",
        elpv_cache,
        "--runs-dir",
        tmp_path,
        "--layer-sets",
        NARROW,
        "--clf",
        "logreg",
        "--cv",
        "3",
    ]
    code, out, terminal = _stderr_on_a_terminal(*args)
    assert code == 0, terminal
    assert "compare: 100%" in terminal and "12/12" in terminal and "<" in terminal  # 3 rows x (3 folds + 1), ETA
    assert len([line for line in out.splitlines() if line.startswith("row ")]) == 3
    code, out, terminal = _stderr_on_a_terminal(*args, "--quiet")
    assert code == 0 and "%|" not in terminal, terminal


def test_compare_reads_layers_once_and_logs_one_run_per_row(elpv_cache, monkeypatch):
    reads = []
    original = CacheEntry.read
    monkeypatch.setattr(
        CacheEntry, "read", lambda self, layers, rows=None: reads.append(layers) or original(self, layers, rows)
    )
    before = log_size(elpv_cache)
    result = compare(
        None,
        ["each", "block6d_add,top_activation"],
        compare_specs("knn,rf", grid={"min_samples_leaf": [1, 3]}, params={"n_estimators": 10}),
        cache=elpv_cache,
        compute=Compute(workers=2),
        log=lambda *a: None,
    )
    entry = Cache(elpv_cache).open(None)
    assert [list(r) for r in reads] == [entry.layers]  # the union, once, in depth order
    table = result.table
    assert len(table) == (len(entry.layers) + 1) * 3 + 2  # knn + rf x 2 grid points per subset, 2 baselines
    assert not table.duplicated(["layers", "classifier", "params"]).any()
    assert set(table.loc[table["classifier"] == "knn", "params"]) == {"{}"}  # the grid goes only to rf
    assert table["depth"].notna().sum() == len(entry.layers) * 3  # "each" rows carry their depth index
    assert log_size(elpv_cache) == before + len(table)
    assert set(table["run_id"]) <= set(read_log(elpv_cache)["run_id"])
    assert result.csv.is_file() and result.plot.is_file()
    pd.testing.assert_frame_equal(pd.read_csv(result.csv)[["layers", "classifier"]], table[["layers", "classifier"]])


LAYERS = ["top_activation", "block6d_add"]


@pytest.fixture(scope="module")
def compared(elpv_cache, tmp_path_factory):
    """compare --cv 3 of logreg on two subsets (standardized), its printed lines and its runs folder."""
    lines, runs_dir = [], tmp_path_factory.mktemp("compare_runs")
    result = featx.compare(
        None,
        LAYERS,
        featx.compare_specs("logreg", seed=1, standardize=True),
        featx.Evaluation(cv=3, seed=1),
        cache=featx.Cache(elpv_cache, runs_dir=runs_dir),
        log=lines.append,
    )
    return result, lines, runs_dir


@pytest.mark.slow
def test_compare_cv_table_has_ci_columns_baselines_and_is_sorted(compared, elpv_cache):
    result, lines, runs_dir = compared
    saved = pd.read_csv(result.csv)
    assert {f"cv_{m}_{s}" for m in METRICS for s in ("mean", "ci95")} <= set(saved.columns)
    assert result.metric == "balanced_accuracy" and result.score == "cv_balanced_accuracy_mean"
    assert set(saved["classifier"]) == {"logreg", "majority", "stratified"} and len(saved) == 4
    assert saved["cv_balanced_accuracy_mean"].is_monotonic_decreasing
    chance = 1 / len(Cache(elpv_cache).open().class_names)  # the majority baseline's balanced accuracy
    assert saved.loc[saved["classifier"] == "majority", "cv_balanced_accuracy_mean"].tolist() == [chance]
    logged = read_log(Cache(None, runs_dir=runs_dir)).set_index("run_id").loc[saved["run_id"]]
    assert (logged["cv"] == "cv3x1").all() and logged["cv_balanced_accuracy_mean"].tolist() == saved[
        "cv_balanced_accuracy_mean"
    ].tolist()


@pytest.mark.slow
def test_compare_rows_are_scored_on_the_same_folds_and_end_with_the_best_row_line(compared, elpv_cache, tmp_path):
    result, lines, _ = compared
    assert result.table["cv_folds"].nunique() == 1  # every row, baselines included, on one set of folds
    best = [line for line in lines if line.startswith("best: ")]
    assert [unwrapped(best[0])] == [unwrapped(result.best_line)] and len(best) == 1  # as printed, wrapped to fit
    assert lines.index(best[0]) == len(lines) - 2  # then only the "saved" line
    top, second = (f"{m} on {layers}" for m, layers in result.table[["model", "layers"]].head(2).to_numpy())
    assert best[0].startswith(f"best: {top} balanced_accuracy ")
    assert (f"{top} beats {second} by " in best[0]) or ("within noise" in best[0] and second in best[0])
    again = featx.compare(
        None,
        LAYERS[:1],
        featx.compare_specs("majority", seed=1),
        featx.Evaluation(cv=3, seed=1),
        cache=featx.Cache(elpv_cache, runs_dir=tmp_path),
        log=lambda *a: None,
    )
    assert set(again.table["cv_folds"]) == set(result.table["cv_folds"])  # same seed, same folds, any rows


@pytest.mark.slow
def test_poisoned_test_rows_change_no_cv_score(compared, elpv_cache, tmp_path):
    """Overwrite the test images' features in a copy of the cache with huge noise: the CV columns (and the
    ranking) must not move; only the test columns may."""
    result, _, _ = compared
    copy = tmp_path / "poisoned"
    shutil.copytree(elpv_cache, copy, ignore=shutil.ignore_patterns("runs", "reports"))
    entry = Cache(copy).open()
    test = np.flatnonzero(entry.split == "test")
    for layer in LAYERS:
        with h5py.File(entry.layer_file(layer), "r+") as f:
            features = f["features"][:]
            features[test] = np.random.default_rng(0).normal(0, 1e4, size=(len(test), features.shape[1]))
            f["features"][...] = features
    poisoned = featx.compare(
        None,
        LAYERS,
        featx.compare_specs("logreg", seed=1, standardize=True),
        featx.Evaluation(cv=3, seed=1),
        cache=copy,
        log=lambda *a: None,
    )
    columns = ["layers", "model", *(c for c in result.table.columns if c.startswith("cv_"))]
    pd.testing.assert_frame_equal(poisoned.table[columns], result.table[columns])
    assert not poisoned.table["test_accuracy"].equals(result.table["test_accuracy"])


@pytest.mark.slow
def test_compare_without_cv_ranks_by_val_and_says_there_is_no_ci(elpv_cache, tmp_path):
    result = featx.compare(
        None,
        LAYERS[:1],
        featx.compare_specs("logreg", standardize=True),
        featx.Evaluation(metric="f1_macro"),
        cache=featx.Cache(elpv_cache, runs_dir=tmp_path),
        log=lambda *a: None,
    )
    assert result.score == "val_f1_macro" and result.table["val_f1_macro"].is_monotonic_decreasing
    assert "(one split: no CI)" in result.best_line and "--cv K" in result.best_line
    assert not any(c.startswith("cv_") for c in result.table.columns)


def test_class_weight_is_refused_for_classifiers_without_it(elpv_cache, tmp_path):
    with pytest.raises(FeatxError, match=r"classifier\(s\) knn have no class_weight"):
        featx.compare(
            None,
            LAYERS,
            featx.compare_specs("logreg,knn", class_weight="balanced"),
            cache=featx.Cache(elpv_cache, runs_dir=tmp_path),
            log=lambda *a: None,
        )
    with pytest.raises(FeatxError, match="unknown metric"):
        featx.compare(
            None,
            LAYERS,
            featx.compare_specs(("rf",)),
            featx.Evaluation(metric="test_accuracy"),
            cache=featx.Cache(elpv_cache, runs_dir=tmp_path),
            log=lambda *a: None,
        )


def test_svm_folds_past_the_shared_gram_budget_each_bind_their_own(monkeypatch):
    """Where the train+val rows pass the kernel budget but each fold's train rows do not, compare gives every fold's
    batch a Gram of its own (an unbound one shared by all would stay bound to the first fold's rows, and the next
    fold's fit would refuse it): one worker, 5 folds of digits, the budget between the two sizes."""
    from sklearn.datasets import load_digits

    import featx.classifiers.gram as gram_module
    from featx.experiments import compare as compare_module

    monkeypatch.setattr(gram_module, "KERNEL_MAX_BYTES", 8 * 170**2)  # 170 rows: folds' 160 fit, train+val's 200 not
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    split = np.array(["train"] * 150 + ["val"] * 50 + ["test"] * 100)
    folds = make_folds(y, split, 5, 1, 0)

    class Bar:
        def update(self, *args):
            pass

    runner = compare_module._Runner(
        class_names=[str(i) for i in range(10)],
        X=X,
        y=y,
        split=split,
        folds=folds,
        workers=1,
        cluster=False,
        reuse=True,
        bar=Bar(),
        log=lambda *a: None,
        metric="accuracy",
    )
    columns = np.arange(X.shape[1])
    rows = [
        compare_module._Row(
            selection=None, depth=None, spec=FitSpec(classifier="svm", params={"C": C}), columns=columns
        )
        for C in (1.0, 10.0)
    ]
    runner.run_folds(rows, range(5))
    for row in rows:
        for fold, (train, held_out) in enumerate(folds.splits):
            alone = fit_fold(row.spec, X[train], y[train], X[held_out], reuse=False)[0].predict(X[held_out])
            assert row.fold_scores[fold]["accuracy"] == pytest.approx(np.mean(alone == y[held_out]), abs=0)
