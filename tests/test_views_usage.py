"""Using augmented views: training on every view of the train images, test-time augmentation (TTA), folds by
image, FitSpec/runs-log/reuse/skops support, and fit/compare/tune/predict --views/--tta end to end.

Array-level tests use scikit-learn's digits with a real augmentation (each 8x8 digit mirrored); the rest use
a cache entry of real ELPV images with a flipped view, extracted once per module.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks

import forkserver
from featx.classifiers import make_pipeline
from featx.classifiers.views import ViewEnsemble, final_classifier, training_rows, view_rows
from featx.errors import FeatxError
from featx.experiments import FitSpec, train_and_score
from featx.experiments.reuse import logged_runs
from featx.experiments.runs import LOG_FILE, LOG_VERSION, _load_pipeline, append_run, read_log, save_model
from featx.experiments.selection import cross_validate, make_folds

CLASSES = [str(d) for d in range(10)]
FLIP = ("id", "hflip")


@pytest.fixture(scope="module")
def digit_views(digits):
    """digits with a second view per image, the mirrored digit: X of shape (n, 2 * 64), y, split."""
    X, y, split = digits
    mirrored = X.reshape(-1, 8, 8)[:, :, ::-1].reshape(len(X), 64)
    return np.concatenate([X, mirrored], axis=1), y, split


def logreg():
    return Pipeline([("standardize", StandardScaler()), ("clf", LogisticRegression(max_iter=2000))])


@parametrize_with_checks([ViewEnsemble(logreg()), ViewEnsemble(logreg(), tta=True), ViewEnsemble(LinearSVC(), tta=True)])
def test_view_ensemble_passes_sklearn_checks(estimator, check):
    check(estimator)


def test_training_uses_every_view_of_each_image_as_a_row(digit_views):
    X, y, split = digit_views
    train = split == "train"
    model = ViewEnsemble(logreg(), views=FLIP).fit(X[train], y[train])
    rows = view_rows(X[train], 2)
    assert model.estimator_[0].n_samples_seen_ == 2 * train.sum()  # n_train * V rows reached the pipeline
    np.testing.assert_allclose(model.estimator_[0].mean_, rows.mean(axis=0))
    np.testing.assert_array_equal(rows[1::2], X[train][:, 64:])  # view 1 of each image: the mirrored digit
    assert model.n_view_features_ == 64 and model.n_features_in_ == 128 and list(model.classes_) == list(range(10))


def test_without_tta_only_the_identity_view_decides(digit_views):
    X, y, split = digit_views
    train, test = split == "train", split == "test"
    model = ViewEnsemble(logreg(), views=FLIP).fit(X[train], y[train])
    identity = model.predict_proba(X[test][:, :64])  # d columns are accepted without tta
    np.testing.assert_array_equal(model.predict_proba(X[test]), identity)
    np.testing.assert_array_equal(identity, model.estimator_.predict_proba(X[test][:, :64]))
    garbled = X[test].copy()
    garbled[:, 64:] = 0  # the other view's columns are never read
    np.testing.assert_array_equal(model.predict(garbled), model.predict(X[test]))


def test_tta_averages_the_probabilities_of_an_image_views(digit_views):
    X, y, split = digit_views
    train, test = split == "train", split == "test"
    model = ViewEnsemble(logreg(), views=FLIP, tta=True).fit(X[train], y[train])
    per_view = [model.estimator_.predict_proba(X[test][:, v * 64:(v + 1) * 64]) for v in range(2)]
    mean = (per_view[0] + per_view[1]) / 2
    np.testing.assert_allclose(model.predict_proba(X[test]), mean, rtol=1e-12)
    np.testing.assert_array_equal(model.predict(X[test]), np.argmax(mean, axis=1))
    assert not np.array_equal(model.predict_proba(X[test]), per_view[0])
    with pytest.raises(ValueError, match="expecting 128 features"):
        model.predict(X[test][:, :64])  # tta needs every view


def test_tta_averages_decision_values_where_there_are_no_probabilities(digit_views):
    X, y, split = digit_views
    train, test = split == "train", split == "test"
    model = ViewEnsemble(Pipeline([("clf", LinearSVC())]), views=FLIP, tta=True).fit(X[train], y[train])
    assert not hasattr(model, "predict_proba")
    mean = np.mean([model.estimator_.decision_function(X[test][:, v * 64:(v + 1) * 64]) for v in range(2)], axis=0)
    np.testing.assert_allclose(model.decision_function(X[test]), mean)
    np.testing.assert_array_equal(model.predict(X[test]), np.argmax(mean, axis=1))


def test_tta_with_the_identity_view_alone_is_the_plain_pipeline(digit_views):
    X, y, split = digit_views
    X, train, test = X[:, :64], split == "train", split == "test"
    plain = logreg().fit(X[train], y[train])
    one = ViewEnsemble(logreg(), views=("id",), tta=True).fit(X[train], y[train])
    np.testing.assert_array_equal(one.predict_proba(X[test]), plain.predict_proba(X[test]))


def test_views_must_start_with_the_identity_and_divide_the_columns(digit_views):
    X, y, _ = digit_views
    with pytest.raises(ValueError, match="identity view 'id' first"):
        ViewEnsemble(logreg(), views=("hflip", "id")).fit(X, y)
    with pytest.raises(ValueError, match="not a multiple of the 3 views"):
        ViewEnsemble(logreg(), views=("id", "hflip", "vflip")).fit(X[:, :127], y)
    with pytest.raises(FeatxError, match="identity view 'id' first"):
        FitSpec(views=("hflip",))


def test_cv_folds_split_images_so_no_image_views_cross_a_fold(digit_views):
    X, y, split = digit_views
    folds = make_folds(y, split, n_splits=3, seed=0)
    model = ViewEnsemble(Pipeline([("clf", KNeighborsClassifier())]), views=FLIP)
    result = cross_validate(model, X, y, folds, return_estimators=True)
    for (train, held_out), fitted in zip(folds.splits, result.estimators):
        seen = fitted.estimator_[-1]._fit_X  # the rows the classifier was trained on
        np.testing.assert_array_equal(seen, view_rows(X[train], 2))  # both views of exactly the train images
        held_rows = {row.tobytes() for row in view_rows(X[held_out], 2)}
        assert not held_rows & {row.tobytes() for row in seen}


def test_a_head_that_holds_out_validation_itself_gets_whole_images(digit_views):
    from featx.classifiers.dense import DenseHeadClassifier

    X, y, split = digit_views
    train = split == "train"
    rows, y_rows, X_val, y_val = training_rows(DenseHeadClassifier(), X[train], y[train], 2)
    assert len(rows) + 2 * len(X_val) == 2 * train.sum() and X_val.shape[1] == 64
    kept = {row.tobytes() for row in rows}
    assert not any(row.tobytes() in kept for row in X_val)  # no held-out image has a view in training
    passed = training_rows(DenseHeadClassifier(), X[train], y[train], 2, X[split == "val"], y[split == "val"])
    np.testing.assert_array_equal(passed[2], X[split == "val"][:, :64])  # given validation data: identity view


def test_fitspec_with_views_wraps_the_pipeline_and_says_so(digit_views):
    plain = FitSpec(classifier="logreg", transforms={"standardize": True})
    views = FitSpec(classifier="logreg", transforms={"standardize": True}, views=FLIP, tta=True)
    assert isinstance(plain.pipeline(), Pipeline) and plain.plain and not views.plain
    model = views.pipeline()
    assert isinstance(model, ViewEnsemble) and model.views == FLIP and model.tta
    assert final_classifier(model) is model.estimator[-1]
    assert "views" not in plain.to_dict() and "views" not in plain.describe()
    assert views.to_dict()["views"] == ["id", "hflip"] and views.to_dict()["tta"] is True
    assert views.describe().endswith("seed=0 views=id,hflip tta=true")
    X, y, split = digit_views
    scores = train_and_score(X, y, split, views, class_names=CLASSES)
    assert scores.n_features == 64 and final_classifier(scores.pipeline).n_features_in_ == 64
    assert scores.metrics["test"]["accuracy"] > 0.9


def test_skops_round_trip_keeps_the_views_and_predictions(digit_views, tmp_path):
    X, y, split = digit_views
    train, test = split == "train", split == "test"
    model = ViewEnsemble(make_pipeline("rf", {"n_estimators": 20}), views=FLIP, tta=True).fit(X[train], y[train])
    save_model(model, tmp_path / "model.skops")
    loaded = _load_pipeline(tmp_path / "model.skops", "r")
    assert isinstance(loaded, ViewEnsemble) and loaded.views == FLIP and loaded.tta
    np.testing.assert_array_equal(loaded.predict_proba(X[test]), model.predict_proba(X[test]))


@pytest.mark.slow  # a Keras fit, saved and loaded
def test_dense_head_in_a_view_ensemble_saves_its_keras_model_beside_it(digit_views, tmp_path):
    X, y, split = digit_views
    train, val, test = split == "train", split == "val", split == "test"
    spec = FitSpec(classifier="dense", params={"hidden": (16,), "epochs": 3}, views=FLIP, tta=True)
    model = spec.pipeline().fit(X[train], y[train], X_val=X[val], y_val=y[val])
    assert final_classifier(model).history_["val_accuracy"].notna().all()
    save_model(model, tmp_path / "model.skops")
    assert (tmp_path / "head.keras").is_file() and hasattr(final_classifier(model), "model_")  # caller's intact
    loaded = _load_pipeline(tmp_path / "model.skops", "r")
    np.testing.assert_allclose(loaded.predict_proba(X[test]), model.predict_proba(X[test]), rtol=1e-5)


def _v1_log(folder):
    """A runs log as featx wrote it before views (format version 1), with one run."""
    from featx.experiments.runs import COLUMNS

    old = [c for c in COLUMNS if c not in ("views", "tta")]
    folder.mkdir(parents=True)
    with sqlite3.connect(folder / LOG_FILE) as db:
        db.execute(f"CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(old)})")
        db.execute("INSERT INTO runs (run_id, cache_key, layer_names, classifier, params, transforms, seed) "
                   "VALUES ('old-run', 'k', 'a', 'rf', '{}', 'none', 0)")
        db.execute("PRAGMA user_version=1")


def test_an_old_log_reads_as_plain_runs_and_is_migrated_by_the_next_write(tmp_path):
    runs = tmp_path / "runs"
    _v1_log(runs)
    before = read_log(runs_dir=runs)
    assert before.loc[0, "views"] == "id" and before.loc[0, "tta"] == 0
    append_run(tmp_path, {"run_id": "new-run", "cache_key": "k", "layer_names": "a", "classifier": "rf",
                          "params": "{}", "transforms": "none", "seed": 0, "views": "id,hflip", "tta": 1},)
    with sqlite3.connect(runs / LOG_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LOG_VERSION == 2
    table = read_log(runs_dir=runs)
    assert list(table["views"]) == ["id", "id,hflip"] and list(table["tta"]) == [0, 1]
    plain = FitSpec(classifier="rf", params={})
    views = FitSpec(classifier="rf", params={}, views=FLIP, tta=True)
    assert logged_runs(table, "k", [(["a"], plain)]) == ["old-run"]
    assert logged_runs(table, "k", [(["a"], views)]) == ["new-run"]
    assert logged_runs(table, "k", [(["a"], FitSpec(classifier="rf", views=FLIP))]) is None  # no tta: not reused
