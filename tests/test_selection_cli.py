"""Model selection wired into the product (issue 11): compare/fit --cv, baselines and the best-row line,
`featx tune`, and runs ordered by the selection score, on real ELPV features (the session's elpv_cache)."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

import featx
import featx.experiments.tune
from featx.cache.store import Cache
from featx.cli import main
from featx.compute import Compute
from featx.errors import FeatxError
from featx.runs.listing import format_runs, runs_table
from featx.runs.listing import list_runs as runs
from featx.runs.store import read_log
from featx.selection.metrics import METRICS
from featx.selection.spec import Evaluation, tune_specs

QUIET = {"log": lambda *a: None}
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
    assert best == [result.best_line] and lines.index(best[0]) == len(lines) - 2  # then only the "saved" line
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


@pytest.mark.slow
def test_runs_are_ordered_by_the_selection_score_never_by_test(elpv_cache, tmp_path):
    where = {"cache": featx.Cache(elpv_cache, runs_dir=tmp_path), "log": lambda *a: None}
    with_cv = featx.fit(
        None,
        "top_activation",
        featx.fit_spec("logreg", class_weight="balanced", standardize=True),
        featx.Evaluation(cv=3),
        **where,
    )
    plain = [
        featx.fit(
            None,
            "top_activation",
            featx.fit_spec("rf", params={"min_samples_leaf": leaf, "n_estimators": 20}, standardize=True),
            **where,
        )
        for leaf in (1, 20)
    ]
    listed = runs_table(Cache(None, runs_dir=tmp_path), metric="balanced_accuracy")
    table = listed.table
    assert table["selection_score"].is_monotonic_decreasing
    by_id = table.set_index("run_id")
    assert by_id.loc[with_cv.run_id, "selected_by"] == "cv3x1"
    assert by_id.loc[with_cv.run_id, "selection_score"] == with_cv.row["cv_balanced_accuracy_mean"]
    assert json_params(by_id.loc[with_cv.run_id, "params"]) == {"class_weight": "balanced"}
    for run in plain:
        assert by_id.loc[run.run_id, "selected_by"] == "val"
        assert by_id.loc[run.run_id, "selection_score"] == run.row["val_balanced_accuracy"]
    assert "CV mean for the 1 run(s)" in listed.order and "never test" in listed.order
    assert format_runs(listed).splitlines()[-1] == listed.order
    assert "a test score" in runs_table(Cache(None, runs_dir=tmp_path), sort="test_accuracy").order


def json_params(text: str) -> dict:
    import json

    return json.loads(text)


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
    last = capsys.readouterr().out.strip().splitlines()[-1]
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
