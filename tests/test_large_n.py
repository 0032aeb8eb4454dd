"""Models for many rows (issue 22): nystroem-svm (RBF kernel map + linear SVM) against exact SVC, sgd, rf on
every core, the note that names the faster choice beyond 10,000 rows, and their command-line flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featx.classifiers import make_classifier, make_pipeline
from featx.classifiers.registry import LARGE_N, large_n_note
from featx.cli import _classifier_params, build_parser
from featx.experiments import FitSpec
from featx.features.transforms import build_feature_pipeline
from tests.cli_capture import cli


@pytest.fixture(scope="module")
def parts(digits):
    X, y, split = digits
    train, test = split != "test", split == "test"
    return X[train], y[train], X[test], y[test]


def test_nystroem_svm_decides_like_the_exact_rbf_svm(parts):
    X_train, y_train, X_test, y_test = parts
    exact = make_pipeline("svm", None, build_feature_pipeline(standardize=True)).fit(X_train, y_train)
    approx = make_pipeline("nystroem-svm", {"n_components": 600}, build_feature_pipeline(standardize=True)).fit(X_train, y_train)
    clf = approx[-1]
    assert clf.nystroem_.components_.shape == (600, X_train.shape[1])
    mapped = approx[:-1].transform(X_train)
    assert clf.gamma_ == pytest.approx(1 / (mapped.shape[1] * mapped.var()), rel=1e-6)  # "scale", as SVC's
    agree = (approx.predict(X_test) == exact.predict(X_test)).mean()
    assert agree >= 0.95, agree
    assert approx.score(X_test, y_test) >= exact.score(X_test, y_test) - 0.03


def test_nystroem_svm_caps_landmarks_at_the_rows_and_takes_a_fixed_gamma(parts):
    X_train, y_train, X_test, y_test = parts
    small = make_classifier("nystroem-svm", {"gamma": 0.01}, seed=1).fit(X_train[:200], y_train[:200])
    assert small.nystroem_.components_.shape[0] == 200 and small.gamma_ == 0.01
    assert small.decision_function(X_test).shape == (len(X_test), 10)
    assert small.score(X_test, y_test) > 0.8  # chance is 0.1


@pytest.mark.parametrize("loss", ["log_loss", "hinge"])
def test_sgd_learns_digits_and_gives_probabilities_with_log_loss(parts, loss):
    X_train, y_train, X_test, y_test = parts
    model = make_pipeline("sgd", {"loss": loss, "early_stopping": loss == "hinge"},
                          build_feature_pipeline(standardize=True)).fit(X_train, y_train)
    assert model.score(X_test, y_test) > 0.85
    assert hasattr(model, "predict_proba") == (loss == "log_loss")
    assert make_classifier("sgd").loss == "log_loss"


def test_rf_uses_every_core_unless_told():
    assert make_classifier("rf").n_jobs == -1
    assert FitSpec(classifier="rf", n_jobs=None).pipeline()[-1].n_jobs == -1
    assert make_classifier("rf", n_jobs=1).n_jobs == 1  # folds in parallel keep each forest on one core
    assert make_classifier("rf", {"n_jobs": 2}, n_jobs=1).n_jobs == 2  # the user's value wins


def test_the_note_names_the_faster_choice_beyond_10000_rows():
    assert large_n_note("svm", LARGE_N) is None
    note = large_n_note("svm", LARGE_N + 1)
    assert note.startswith("note: --clf svm on 10,001 training rows") and "nystroem-svm" in note
    assert "\n" not in note
    assert large_n_note("logreg", 10 * LARGE_N) is None and large_n_note("nystroem-svm", 10 * LARGE_N) is None


def test_flags_reach_the_classifier_parameters():
    args = build_parser().parse_args(["compare", "--layer-sets", "blocks", "--clf", "sgd,nystroem-svm", "--loss", "hinge",
                                      "--alpha", "1e-3", "--early-stopping", "--n-components", "300", "--gamma", "0.01"])
    assert _classifier_params(args) == {"loss": "hinge", "alpha": 0.001, "early_stopping": True, "n_components": 300,
                                        "gamma": 0.01}


@pytest.mark.slow
def test_fit_nystroem_svm_and_sgd_from_the_command_line(elpv_cache, tmp_path):
    code, out, err = cli("fit", "--cache-dir", elpv_cache, "--runs-dir", tmp_path, "--layers", "top_activation",
                         "--clf", "nystroem-svm", "--n-components", "64", "--gamma", "0.001", "--standardize")
    assert code == 0 and err == "", err
    code, out2, err = cli("fit", "--cache-dir", elpv_cache, "--runs-dir", tmp_path, "--layers", "top_activation",
                          "--clf", "sgd", "--loss", "hinge", "--early-stopping", "--standardize")
    assert code == 0 and err == "", err
    from featx.experiments.runlog import read_log

    log = read_log(runs_dir=tmp_path).set_index("classifier")
    nystroem = json.loads(log.loc["nystroem-svm", "all_params"])
    assert (nystroem["n_components"], nystroem["gamma"]) == (64, 0.001)
    sgd = json.loads(log.loc["sgd", "all_params"])
    assert (sgd["loss"], sgd["early_stopping"]) == ("hinge", True)
    assert np.isfinite(log["val_accuracy"]).all()
