"""Classifier registry, the typed value parser and the Keras dense head, on scikit-learn's digits."""

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from featx.classifiers import (
    DenseHeadClassifier,
    fit_pipeline,
    make_classifier,
    make_pipeline,
)
from featx.errors import FeatxError
from featx.features.transforms import FNEDiscretizer, build_feature_pipeline
from featx.values import params_dict, parse_grid_item, parse_param


@pytest.fixture(scope="module")
def parts(digits):
    """conftest's digits as X_train, X_val, X_test, y_train, y_val, y_test."""
    X, y, split = digits
    (tr, va, te) = (split == s for s in ("train", "val", "test"))
    return X[tr], X[va], X[te], y[tr], y[va], y[te]


@pytest.mark.parametrize(
    "name, transforms",
    [("rf", {}), ("logreg", {"standardize": True}), ("logreg", {"discretize": "fne"})],
)
def test_pipeline_beats_chance_by_far(parts, name, transforms):
    X_train, _, X_test, y_train, _, y_test = parts
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
        ("dense", {"optimizer": "adagrad"}, ["'optimizer'", "DenseHeadClassifier", "'adam'", "'adagrad'"]),
    ],
)
def test_bad_parameter_values_fail_when_built_with_what_is_allowed(name, params, words):
    with pytest.raises(FeatxError) as error:
        make_classifier(name, params)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


@pytest.fixture(scope="module")
def dense_fit(parts):
    """A dense head with a learning rate high enough that validation accuracy wobbles, so
    the last epoch is not the best one and restoring the best weights is observable."""
    X_train, X_val, _, y_train, y_val, _ = parts
    clf = DenseHeadClassifier(hidden=(32,), lr=0.3, epochs=15)
    return clf.fit(X_train, y_train, X_val=X_val, y_val=y_val)


def test_dense_head_learns(dense_fit, parts):
    history = dense_fit.history_
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == list(range(1, 16))
    best = history.loc[history["epoch"] == dense_fit.best_epoch_, "val_accuracy"].item()
    assert best == history["val_accuracy"].max()
    assert best > history["val_accuracy"].iloc[0]
    _, _, X_test, _, _, y_test = parts
    assert dense_fit.score(X_test, y_test) > 0.85
    np.testing.assert_array_equal(dense_fit.classes_, np.arange(10))


def test_dense_head_restores_best_weights(dense_fit, parts):
    _, X_val, _, _, y_val, _ = parts
    history = dense_fit.history_
    best = history["val_accuracy"].max()
    # Precondition: training ended on a worse epoch, else this test would prove nothing.
    assert history["val_accuracy"].iloc[-1] < best
    assert dense_fit.score(X_val, y_val) == pytest.approx(best, abs=1e-6)


def test_dense_head_patience_stops_early(parts):
    X_train, X_val, _, y_train, y_val, _ = parts
    clf = DenseHeadClassifier(hidden=(16,), lr=0.3, epochs=30, patience=2).fit(
        X_train, y_train, X_val=X_val, y_val=y_val
    )
    assert len(clf.history_) == clf.best_epoch_ + 2 < 30


def test_dense_pipeline_joblib_round_trip(parts, tmp_path):
    X_train, _, X_test, y_train, _, _ = parts
    labels = np.array(list("abcdefghij"))[y_train]  # string labels survive the round trip too
    head = DenseHeadClassifier(hidden=(32,), epochs=5)
    pipe = Pipeline([("fne", FNEDiscretizer()), ("clf", head)])
    pipe.fit(X_train, labels)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    loaded = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(loaded.predict(X_test), pipe.predict(X_test))
    np.testing.assert_allclose(loaded.predict_proba(X_test), pipe.predict_proba(X_test))
    assert loaded[-1].best_epoch_ == pipe[-1].best_epoch_
    assert set(pipe.predict(X_test)) <= set("abcdefghij")


def test_dense_head_params_and_clone():
    clf = make_classifier("dense", {"hidden": (64, 32), "optimizer": "adam"}, seed=5)
    assert isinstance(clf, DenseHeadClassifier)
    params = clf.get_params()
    assert (params["hidden"], params["optimizer"], params["random_state"]) == ((64, 32), "adam", 5)
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == params
    assert clone(clf.set_params(dropout=0.2)).dropout == 0.2


def test_fit_pipeline_maps_validation_data_through_the_train_fitted_transforms(parts):
    X_train, X_val, _, y_train, y_val, _ = parts
    pipe = Pipeline([("fne", FNEDiscretizer()), ("clf", DenseHeadClassifier(hidden=(16,), lr=0.3, epochs=4))])
    fit_pipeline(pipe, X_train, y_train, X_val, y_val)
    fne, head = pipe.named_steps["fne"], pipe[-1]
    np.testing.assert_allclose(fne.mean_, X_train.mean(axis=0))  # transforms fitted on train only
    # the head's validation accuracy is measured on the FNE-mapped val split, so its best epoch scores it exactly
    best = head.history_["val_accuracy"].max()
    assert pipe.score(X_val, y_val) == pytest.approx(best, abs=1e-6)
    assert "validation_data" not in head.get_params()  # no data in the saved model's parameters


def test_fit_pipeline_without_a_validation_head_is_plain_fit(parts):
    X_train, X_val, X_test, y_train, y_val, y_test = parts
    pipe = fit_pipeline(make_pipeline("logreg", None, build_feature_pipeline(standardize=True)), X_train, y_train,
                        X_val, y_val)
    reference = make_pipeline("logreg", None, build_feature_pipeline(standardize=True)).fit(X_train, y_train)
    np.testing.assert_array_equal(pipe.predict(X_test), reference.predict(X_test))
