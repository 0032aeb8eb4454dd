"""Classifier registry, the typed value parser, pipelines and the models for many rows (nystroem-svm, sgd, rf), on
scikit-learn's digits; the Keras dense head has its own file (tests/test_classifiers_dense.py)."""

import json

import numpy as np
import pytest

from featx.cache.store import Cache
from featx.classifiers import fit_pipeline, make_classifier, make_pipeline
from featx.classifiers.registry import LARGE_N, large_n_note
from featx.cli import build_parser
from featx.cli.options import classifier_params
from featx.errors import FeatxError
from featx.features.transforms import build_feature_pipeline
from featx.selection.spec import FitSpec
from featx.values import params_dict, parse_grid_item, parse_param

from helpers import cli


@pytest.mark.parametrize(
    "name, transforms",
    [("rf", {}), ("logreg", {"standardize": True}), ("logreg", {"discretize": "fne"})],
)
def test_pipeline_beats_chance_by_far(digits_parts, name, transforms):
    X_train, _, X_test, y_train, _, y_test = digits_parts
    pipe = make_pipeline(name, None, build_feature_pipeline(**transforms), seed=0, n_jobs=1)
    assert pipe.steps[-1][0] == "clf"
    accuracy = pipe.fit(X_train, y_train).score(X_test, y_test)
    assert accuracy > 0.8  # chance is 0.1


def test_make_classifier_sets_seed_and_jobs_only_where_accepted():
    forest = make_classifier("rf", {"n_estimators": 7}, seed=3, n_jobs=2)
    assert (forest.n_estimators, forest.random_state, forest.n_jobs) == (7, 3, 2)
    knn = make_classifier("knn", seed=3, n_jobs=2)
    assert knn.n_jobs == 2 and "random_state" not in knn.get_params()
    svm = make_classifier("svm", seed=3, n_jobs=2)
    assert svm.kernel == "rbf" and svm.random_state == 3 and "n_jobs" not in svm.get_params()
    assert make_classifier("logreg", n_jobs=2).n_jobs is None  # no effect there; sklearn warns


def test_unknown_classifier_suggests_closest():
    with pytest.raises(FeatxError, match="Did you mean 'logreg'") as error:
        make_classifier("logrg")
    assert "linear-svm" in str(error.value)


def test_unknown_parameter_suggests_closest_and_lists_valid():
    with pytest.raises(FeatxError, match="Did you mean 'max_depth'") as error:
        make_classifier("rf", {"max_dpth": 3})
    assert "n_estimators" in str(error.value)


def test_parse_param():
    items = ["max_depth=3", "criterion=entropy", "class_weight=None", "hidden=(128, 64)", "lr=1e-3"]
    assert params_dict(map(parse_param, items)) == {
        "max_depth": 3,
        "criterion": "entropy",
        "class_weight": None,
        "hidden": (128, 64),
        "lr": 0.001,
    }
    assert make_classifier("rf", dict([parse_param("max_depth=3")])).max_depth == 3
    with pytest.raises(FeatxError, match="given twice"):
        params_dict([parse_param("C=1"), parse_param("C=2")])


@pytest.mark.parametrize("item", ["max_depth", "=3", "max depth=3", "max_depth="])
def test_parse_param_rejects_malformed(item):
    with pytest.raises(FeatxError, match="key=value"):
        parse_param(item)


def test_parse_grid_item_splits_outside_brackets_only():
    assert parse_grid_item("hidden=(256,),(128, 64)") == ("hidden", [(256,), (128, 64)])
    assert parse_grid_item("criterion=gini,entropy") == ("criterion", ["gini", "entropy"])
    assert parse_grid_item("C=0.1,1,1e2") == ("C", [0.1, 1, 100.0])
    with pytest.raises(FeatxError, match="empty"):
        parse_grid_item("C=1,,2")


@pytest.mark.parametrize(
    "name, params, words",
    [
        ("rf", {"max_depth": "abc"}, ["'max_depth'", "RandomForestClassifier", "int in the range [1, inf)", "'abc'"]),
        ("svm", {"C": -1}, ["'C'", "SVC", "(0.0, inf]", "got -1"]),
        pytest.param(
            "dense",
            {"optimizer": "adagrad"},
            ["'optimizer'", "DenseHeadClassifier", "'adam'", "'adagrad'"],
            marks=pytest.mark.slow,
        ),  # builds the Keras dense head
    ],
)
def test_bad_parameter_values_fail_when_built_with_what_is_allowed(name, params, words):
    with pytest.raises(FeatxError) as error:
        make_classifier(name, params)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_fit_pipeline_without_a_validation_head_is_plain_fit(digits_parts):
    X_train, X_val, X_test, y_train, y_val, y_test = digits_parts
    pipe = fit_pipeline(
        make_pipeline("logreg", None, build_feature_pipeline(standardize=True)), X_train, y_train, X_val, y_val
    )
    reference = make_pipeline("logreg", None, build_feature_pipeline(standardize=True)).fit(X_train, y_train)
    np.testing.assert_array_equal(pipe.predict(X_test), reference.predict(X_test))


# --- models for many rows: nystroem-svm (RBF kernel map + linear SVM) against exact SVC, sgd, rf on every core,
# the note that names the faster choice beyond the exact svm's kernel budget, and their command-line flags


@pytest.fixture(scope="module")
def digits_train_test(digits):
    """conftest's digits as X_train (train+val rows), y_train, X_test, y_test."""
    X, y, split = digits
    train, test = split != "test", split == "test"
    return X[train], y[train], X[test], y[test]


def test_nystroem_svm_decides_like_the_exact_rbf_svm(digits_train_test):
    X_train, y_train, X_test, y_test = digits_train_test
    exact = make_pipeline("svm", None, build_feature_pipeline(standardize=True)).fit(X_train, y_train)
    approx = make_pipeline("nystroem-svm", {"n_components": 600}, build_feature_pipeline(standardize=True)).fit(
        X_train, y_train
    )
    clf = approx[-1]
    assert clf.nystroem_.components_.shape == (600, X_train.shape[1])
    mapped = approx[:-1].transform(X_train)
    # "scale", as SVC's: the same float64 variance up to summation order (n u64 = 1e-13)
    assert clf.gamma_ == pytest.approx(1 / (mapped.shape[1] * mapped.var()), rel=1e-6)
    agree = (approx.predict(X_test) == exact.predict(X_test)).mean()
    # the approximation's quality (600 seeded landmarks), not round-off: at most 1 test image in 20 decided
    # otherwise, and at most 3 points of accuracy lost
    assert agree >= 0.95, agree
    assert approx.score(X_test, y_test) >= exact.score(X_test, y_test) - 0.03


def test_nystroem_svm_caps_landmarks_at_the_rows_and_takes_a_fixed_gamma(digits_train_test):
    X_train, y_train, X_test, y_test = digits_train_test
    small = make_classifier("nystroem-svm", {"gamma": 0.01}, seed=1).fit(X_train[:200], y_train[:200])
    assert small.nystroem_.components_.shape[0] == 200 and small.gamma_ == 0.01
    assert small.decision_function(X_test).shape == (len(X_test), 10)
    assert small.score(X_test, y_test) > 0.8  # chance is 0.1


@pytest.mark.parametrize("loss", ["log_loss", "hinge"])
def test_sgd_learns_digits_and_gives_probabilities_with_log_loss(digits_train_test, loss):
    X_train, y_train, X_test, y_test = digits_train_test
    model = make_pipeline(
        "sgd", {"loss": loss, "early_stopping": loss == "hinge"}, build_feature_pipeline(standardize=True)
    ).fit(X_train, y_train)
    assert model.score(X_test, y_test) > 0.85  # a floor on learning digits (chance 0.1), not round-off
    assert hasattr(model, "predict_proba") == (loss == "log_loss")
    assert make_classifier("sgd").loss == "log_loss"


def test_rf_uses_every_core_unless_told():
    assert make_classifier("rf").n_jobs == -1
    assert FitSpec(classifier="rf", n_jobs=None).pipeline()[-1].n_jobs == -1
    assert make_classifier("rf", n_jobs=1).n_jobs == 1  # folds in parallel keep each forest on one core
    assert make_classifier("rf", {"n_jobs": 2}, n_jobs=1).n_jobs == 2  # the user's value wins


def test_the_note_names_the_faster_choice_beyond_the_exact_svms_kernel_budget():
    assert LARGE_N > 20_000  # issue 36: the scale line's 20,000 rows (a 3.2 GB kernel) take the exact path
    assert large_n_note("svm", LARGE_N) is None
    note = large_n_note("svm", LARGE_N + 1)
    assert note.startswith(f"note: --clf svm on {LARGE_N + 1:,} training rows") and "nystroem-svm" in note
    assert "GB" in note and "\n" not in note
    assert large_n_note("logreg", 10 * LARGE_N) is None and large_n_note("nystroem-svm", 10 * LARGE_N) is None


def test_flags_reach_the_classifier_parameters():
    args = build_parser().parse_args(
        [
            "compare",
            "--layer-sets",
            "blocks",
            "--clf",
            "sgd,nystroem-svm",
            "--loss",
            "hinge",
            "--alpha",
            "1e-3",
            "--early-stopping",
            "--n-components",
            "300",
            "--gamma",
            "0.01",
        ]
    )
    assert classifier_params(args) == {
        "loss": "hinge",
        "alpha": 0.001,
        "early_stopping": True,
        "n_components": 300,
        "gamma": 0.01,
    }


@pytest.mark.slow
def test_fit_nystroem_svm_and_sgd_from_the_command_line(elpv_cache, tmp_path):
    code, out, err = cli(
        "fit",
        "--cache-dir",
        elpv_cache,
        "--runs-dir",
        tmp_path,
        "--layers",
        "top_activation",
        "--clf",
        "nystroem-svm",
        "--n-components",
        "64",
        "--gamma",
        "0.001",
        "--standardize",
    )
    assert code == 0 and err == "", err
    code, out2, err = cli(
        "fit",
        "--cache-dir",
        elpv_cache,
        "--runs-dir",
        tmp_path,
        "--layers",
        "top_activation",
        "--clf",
        "sgd",
        "--loss",
        "hinge",
        "--early-stopping",
        "--standardize",
    )
    assert code == 0 and err == "", err
    from featx.runs.store import read_log

    log = read_log(Cache(None, runs_dir=tmp_path)).set_index("classifier")
    nystroem = json.loads(log.loc["nystroem-svm", "all_params"])
    assert (nystroem["n_components"], nystroem["gamma"]) == (64, 0.001)
    sgd = json.loads(log.loc["sgd", "all_params"])
    assert (sgd["loss"], sgd["early_stopping"]) == ("hinge", True)
    assert np.isfinite(log["val_accuracy"]).all()


# --- augmentation flags belong to the dense head; any other classifier refuses them in one line


@pytest.mark.parametrize("command, clf", [("fit", "rf"), ("compare", "rf,logreg"), ("tune", "logreg")])
@pytest.mark.parametrize("flag", ["--mixup", "--feature-noise"])
def test_augmentation_flags_without_a_dense_head_are_one_line_errors(tmp_path, capsys, command, clf, flag):
    import featx.cli

    where = ["--layer-sets" if command == "compare" else "--layers", "final", "--cache-dir", str(tmp_path)]
    assert featx.cli.main([command, "--clf", clf, flag, "0.2", *where]) == 2
    assert capsys.readouterr().err == (
        f"error: {flag} augments the dense head's training and --clf {clf} has no "
        f"dense head; add --clf dense or drop {flag}\n"
    )
