"""Using augmented views: training on every view of the train images, test-time augmentation (TTA), folds by
image, FitSpec/runs-log/reuse/skops support, and fit/compare/tune/predict --views/--tta end to end.

Array-level tests use scikit-learn's digits with a real augmentation (each 8x8 digit mirrored); the rest use
a cache entry of real ELPV images with a flipped view, extracted once per module.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.cache.store import Cache
from featx.classifiers import make_pipeline
from featx.classifiers.views import ViewEnsemble, final_classifier, training_rows, view_rows
from featx.errors import FeatxError
from featx.runs.models import _load_pipeline, save_model
from featx.runs.reuse import logged_runs
from featx.runs.store import LOG_FILE, LOG_VERSION, append_run, read_log
from featx.selection.cv import cross_validate, make_folds
from featx.selection.search import search
from featx.selection.spec import FitSpec, fit_spec
from featx.selection.train import train_and_score

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


@parametrize_with_checks(
    [ViewEnsemble(logreg()), ViewEnsemble(logreg(), tta=True), ViewEnsemble(LinearSVC(), tta=True)]
)
def test_view_ensemble_passes_sklearn_checks(estimator, check):
    check(estimator)


def test_training_uses_every_view_of_each_image_as_a_row(digit_views):
    X, y, split = digit_views
    train = split == "train"
    model = ViewEnsemble(logreg(), views=FLIP).fit(X[train], y[train])
    rows = view_rows(X[train], 2)
    assert model.estimator_[0].n_samples_seen_ == 2 * train.sum()  # n_train * V rows reached the pipeline
    np.testing.assert_allclose(model.estimator_[0].mean_, rows.mean(axis=0))  # float64 means of the same rows
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
    per_view = [model.estimator_.predict_proba(X[test][:, v * 64 : (v + 1) * 64]) for v in range(2)]
    mean = (per_view[0] + per_view[1]) / 2
    np.testing.assert_allclose(model.predict_proba(X[test]), mean, rtol=1e-12)  # the same float64 mean: a few u64
    np.testing.assert_array_equal(model.predict(X[test]), np.argmax(mean, axis=1))
    assert not np.array_equal(model.predict_proba(X[test]), per_view[0])
    with pytest.raises(ValueError, match="expecting 128 features"):
        model.predict(X[test][:, :64])  # tta needs every view


def test_tta_averages_decision_values_where_there_are_no_probabilities(digit_views):
    X, y, split = digit_views
    train, test = split == "train", split == "test"
    model = ViewEnsemble(Pipeline([("clf", LinearSVC())]), views=FLIP, tta=True).fit(X[train], y[train])
    assert not hasattr(model, "predict_proba")
    mean = np.mean([model.estimator_.decision_function(X[test][:, v * 64 : (v + 1) * 64]) for v in range(2)], axis=0)
    np.testing.assert_allclose(model.decision_function(X[test]), mean)  # the same float64 mean (rtol 1e-7)
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


@pytest.mark.slow  # featx.classifiers.dense imports Keras
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
    assert scores.metrics["test"]["accuracy"] > 0.9  # a floor on learning digits (chance 0.1), not round-off


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
    # the saved weights in a rebuilt graph: float32 round-off of a 16-wide head on 64 features (helpers.roundoff)
    np.testing.assert_allclose(loaded.predict_proba(X[test]), model.predict_proba(X[test]), rtol=1e-5)


def _v1_log(folder):
    """A runs log as featx wrote it before views (format version 1), with one run."""
    from featx.runs.store import COLUMNS

    old = [c for c in COLUMNS if c not in ("views", "tta", "split_fingerprint")]
    folder.mkdir(parents=True)
    with sqlite3.connect(folder / LOG_FILE) as db:
        db.execute(f"CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(old)})")
        db.execute(
            "INSERT INTO runs (run_id, cache_key, layer_names, classifier, params, transforms, seed) "
            "VALUES ('20250101-000000-0000aa', 'k', 'a', 'rf', '{}', 'none', 0)"
        )
        db.execute("PRAGMA user_version=1")


def test_an_old_log_reads_as_plain_runs_and_is_migrated_by_the_next_write(tmp_path):
    runs = tmp_path / "runs"
    _v1_log(runs)
    before = read_log(Cache(None, runs_dir=runs))
    assert before.loc[0, "views"] == "id" and before.loc[0, "tta"] == 0
    append_run(
        tmp_path,
        {
            "run_id": "20250102-000000-0000bb",
            "cache_key": "k",
            "layer_names": "a",
            "classifier": "rf",
            "params": "{}",
            "transforms": "none",
            "seed": 0,
            "views": "id,hflip",
            "tta": 1,
            "split_fingerprint": "f" * 16,
        },
    )
    with sqlite3.connect(runs / LOG_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LOG_VERSION == 4
    table = read_log(Cache(None, runs_dir=runs))
    assert list(table["views"]) == ["id", "id,hflip"] and list(table["tta"]) == [0, 1]
    plain = FitSpec(classifier="rf", params={})
    views = FitSpec(classifier="rf", params={}, views=FLIP, tta=True)
    assert logged_runs(table, "k", [(["a"], plain)], split="f" * 16) is None  # its split is not recorded
    table.loc[0, "split_fingerprint"] = "f" * 16
    # reuse matches the spec_hash only (issue 19): rows logged without one (this format-1 row, the hand-made row
    # above) never stand for a fit; given their hashes, a plain run and a views run are told apart as before
    assert logged_runs(table, "k", [(["a"], plain)], split="f" * 16) is None
    from featx.selection.spec import spec_hash

    table["spec_hash"] = [spec_hash(plain), spec_hash(views)]
    assert logged_runs(table, "k", [(["a"], plain)], split="f" * 16) == ["20250101-000000-0000aa"]
    assert logged_runs(table, "k", [(["a"], views)], split="f" * 16) == ["20250102-000000-0000bb"]
    assert logged_runs(table, "k", [(["a"], views)], split="e" * 16) is None  # made on another split
    assert logged_runs(table, "k", [(["a"], FitSpec(classifier="rf", views=FLIP))], split="f" * 16) is None  # no tta


# --- on a real cache entry: ELPV images through EfficientNet-Lite0, identity and mirrored views

SIZE, LIMIT = 96, 100


def quiet(*_):
    pass


def extract_elpv(cache_dir, views="flip", **kw):
    from helpers import extract

    options = {"layers": "final", "limit": LIMIT, "input_size": SIZE, "backbone": "efficientnet_lite0", **kw}
    return extract("elpv", cache_dir=cache_dir, views=views, progress=False, log=quiet, **options).entry


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """A cache folder with one entry of 100 ELPV images: top_activation of the identity and hflip views."""
    cache_dir = tmp_path_factory.mktemp("views_usage")
    entry = extract_elpv(cache_dir)
    return cache_dir, entry


@pytest.mark.slow
def test_load_puts_each_image_views_side_by_side_in_its_row(flipped):
    from featx.features.load import load

    cache_dir, entry = flipped
    loaded = load(entry.name, "final", views="flip", cache=cache_dir)
    loaded_plain = load(entry.name, "final", cache=cache_dir)
    (X, y, _), (plain, y_plain, _) = loaded, loaded_plain
    d = plain.shape[1]
    assert X.shape == (len(plain), 2 * d) and loaded.views == FLIP
    np.testing.assert_array_equal(X[:, :d], plain)
    np.testing.assert_array_equal(
        X[:, d:], entry.read(["top_activation"], np.flatnonzero(entry.valid), view="hflip")[0]
    )
    assert not np.array_equal(X[:, :d], X[:, d:])  # the mirrored cell gives other features
    np.testing.assert_array_equal(y, y_plain)
    assert loaded.feature_slices == loaded_plain.feature_slices == {"top_activation": (0, d)}
    with pytest.raises(
        FeatxError,
        match=r"lacks view\(s\) rot90, rot180.* of layer\(s\) top_activation; run "
        r"`featx extract` .*--views rot90,.*--layers top_activation",
    ):
        load(entry.name, "final", views="d4", cache=cache_dir)


@pytest.mark.slow
def test_combined_entries_join_each_view_features(flipped):
    from featx.features.load import load, load_combined

    cache_dir, entry = flipped
    other = extract_elpv(cache_dir, pool="max")
    combined = load_combined([entry.name, other.name], layers="final", views=FLIP, cache=cache_dir)
    X = combined.X
    a = load(entry.name, "final", views=FLIP, cache=cache_dir)[0]
    b = load(other.name, "final", views=FLIP, cache=cache_dir)[0]
    da, db = a.shape[1] // 2, b.shape[1] // 2
    np.testing.assert_array_equal(X, np.concatenate([a[:, :da], b[:, :db], a[:, da:], b[:, db:]], axis=1))
    assert combined.feature_slices[f"{other.name}/top_activation"] == (da, da + db)  # within one view


@pytest.mark.slow
def test_tta_on_real_features_is_the_mean_over_views_and_differs_from_the_identity(flipped):
    from featx.features.load import load

    cache_dir, entry = flipped
    X, y, meta = load(entry.name, "final", views=FLIP, cache=cache_dir)
    train, test = meta["split"].to_numpy() == "train", meta["split"].to_numpy() != "train"
    model = FitSpec(classifier="logreg", transforms={"standardize": True}, views=FLIP, tta=True).pipeline()
    model.fit(X[train], y[train])
    d = X.shape[1] // 2
    assert model.estimator_[0].n_samples_seen_ == 2 * train.sum()
    views = [model.estimator_.predict_proba(X[test][:, v * d : (v + 1) * d]) for v in range(2)]
    tta = model.predict_proba(X[test])
    np.testing.assert_allclose(tta, (views[0] + views[1]) / 2)  # the same float64 mean (rtol 1e-7)
    identity = model.set_params(tta=False).predict_proba(X[test])
    np.testing.assert_array_equal(identity, views[0])
    assert np.abs(tta - identity).max() > 1e-3  # the mirrored view moves some probability by far more than that


@pytest.mark.slow
def test_fit_with_views_logs_them_and_a_plain_fit_is_as_before(flipped, tmp_path):
    from featx.experiments.fit import fit
    from featx.runs.models import load_model

    cache_dir, entry = flipped
    runs = tmp_path / "runs"
    where = {"cache": Cache(cache_dir, runs_dir=runs), "log": quiet}
    plain = fit(entry.name, "final", fit_spec("logreg", standardize=True), **where)
    again = fit(entry.name, "final", fit_spec("logreg", views="id", standardize=True), **where)
    views = fit(entry.name, "final", fit_spec("logreg", views="flip", tta=True, standardize=True), **where)
    assert plain.row["views"] == "id" and plain.row["tta"] == 0 and isinstance(plain.pipeline, Pipeline)
    assert {k: plain.row[k] for k in ("all_params", "params", "n_features", "val_accuracy", "test_accuracy")} == {
        k: again.row[k] for k in ("all_params", "params", "n_features", "val_accuracy", "test_accuracy")
    }
    assert views.row["views"] == "id,hflip" and views.row["tta"] == 1
    assert views.row["n_features"] == plain.row["n_features"] and views.row["n_train"] == plain.row["n_train"]
    assert views.row["all_params"] == plain.row["all_params"]  # the same classifier, inside the ViewEnsemble
    model, row = load_model(views.run_id, Cache(None, runs_dir=runs))
    assert isinstance(model, ViewEnsemble) and model.views == FLIP and model.tta and row["views"] == "id,hflip"
    table = read_log(Cache(None, runs_dir=runs))
    assert list(table["views"]) == ["id", "id", "id,hflip"] and list(table["tta"]) == [0, 0, 1]
    with pytest.raises(FeatxError, match="--tta averages predictions over augmented views"):
        fit(entry.name, "final", fit_spec("logreg", tta=True, standardize=True), **where)


@pytest.mark.slow
def test_pipeline_extracts_the_views_its_steps_train_on_and_reuses_only_matching_runs(flipped, tmp_path):
    from featx.experiments.pipelines import run_pipeline

    cache_dir, entry = flipped
    recipe = tmp_path / "views.toml"
    recipe.write_text(f"""
data = "elpv"
backbone = "efficientnet_lite0"
layers = "final"
views = "flip"
[extract]
limit = {LIMIT}
input_size = {SIZE}
[[steps]]
kind = "fit"
clf = "logreg"
tta = true
[[steps]]
kind = "fit"
clf = "logreg"
views = "vflip"
[[steps]]
kind = "fit"
clf = "logreg"
views = "id"
""")
    first = run_pipeline(recipe, cache=cache_dir, log=quiet)
    assert first.entry.name == entry.name and "vflip" in first.entry.views  # extracted for step 2 only
    assert sorted(zip(first.table["views"], first.table["tta"])) == [("id", 0), ("id,hflip", 1), ("id,vflip", 0)]
    second = run_pipeline(recipe, cache=cache_dir, log=quiet)
    assert sorted(second.table["run_id"]) == sorted(first.table["run_id"])  # each step reused its own run


def _featx(*argv):
    import forkserver  # the session's server: tests calling this take the fork_server fixture

    child = forkserver.server().run([str(a) for a in argv])
    return child.wait(), child.out, child.err


@pytest.mark.slow
def test_cli_fit_compare_tune_predict_with_views_and_tta(flipped, tmp_path, fork_server):
    from featx.features.load import load
    from featx.runs.models import load_model
    from featx.sources import resolve_source

    cache_dir, entry = flipped
    where = ["--cache-dir", cache_dir, "--runs-dir", tmp_path / "runs"]
    rc, out, err = _featx(
        "fit", entry.name, "--layers", "final", "--clf", "logreg", "--standardize", "--views", "flip", "--tta", *where
    )
    assert rc == 0 and "with views id,hflip (tta)" in out, err
    rc, out, err = _featx(
        "compare",
        entry.name,
        "--layer-sets",
        "final",
        "--clf",
        "logreg,rf",
        "--views",
        "flip",
        "--tta",
        "--cv",
        "2",
        "--n-estimators",
        "20",
        *where,
    )
    assert rc == 0 and "best: " in out, err
    rc, out, err = _featx("tune", entry.name, "--layers", "final", "--clf", "logreg", "--views", "flip", *where)
    assert rc == 0 and "selected: " in out, err
    table = read_log(Cache(None, runs_dir=tmp_path / "runs"))
    assert set(zip(table["views"], table["tta"])) == {("id,hflip", 1), ("id,hflip", 0)}
    tuned = table["run_id"].iloc[-1]

    # predict computes the model's views of the files: the same features, so the same probabilities as the cache's
    source = resolve_source("elpv")
    X, _, meta = load(entry.name, "final", views=FLIP, cache=cache_dir)
    files = [f"{source.root}/{p}" for p in meta["path"][:6]]
    model, _ = load_model(tuned, Cache(None, runs_dir=tmp_path / "runs"))
    for flag, tta in ((["--tta"], True), ([], False)):
        output = tmp_path / f"predictions-{tta}.csv"
        rc, out, err = _featx("predict", "--model", tuned, *files, *flag, "--output", output, *where)
        assert rc == 0, err
        got = pd.read_csv(output)[[f"p_{c}" for c in entry.class_names]].to_numpy()
        expected = model.set_params(tta=tta).predict_proba(X[:6])
        # predict's CSV keeps 4 decimals (5e-5); its recomputed views' features differ from the cached ones by
        # float32 round-off only (tests/test_experiments_predict.py checks that bound), which moves a probability by far
        # less than the 1.5e-4 allowed beyond the rounding (measured: nothing beyond it, every variation)
        np.testing.assert_allclose(got, expected, atol=2e-4)
    assert not np.allclose(
        pd.read_csv(tmp_path / "predictions-True.csv").iloc[:, 3:],
        pd.read_csv(tmp_path / "predictions-False.csv").iloc[:, 3:],
        atol=1e-4,  # TTA moves a probability by far more than the CSV's rounding
    )
    # a run fitted (and scored) with --tta predicts with TTA unless told --no-tta
    with_tta = table.loc[table["tta"] == 1, "run_id"].iloc[0]
    probabilities = {}
    for flag in ("", "--tta", "--no-tta"):
        output = tmp_path / f"predictions-fit{flag}.csv"
        rc, out, err = _featx(
            "predict", "--model", with_tta, *files, *([flag] if flag else []), "--output", output, *where
        )
        assert rc == 0, err
        probabilities[flag] = pd.read_csv(output).iloc[:, 3:].to_numpy()
    np.testing.assert_array_equal(probabilities[""], probabilities["--tta"])
    assert not np.allclose(probabilities[""], probabilities["--no-tta"], atol=1e-4)  # as above

    # missing views, and --tta on a model without views: one error line each, exit 2
    rc, out, err = _featx("fit", entry.name, "--layers", "final", "--clf", "logreg", "--views", "d4", *where)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: cache entry") and "--views rot90" in err
    rc, out, err = _featx("fit", entry.name, "--layers", "final", "--clf", "logreg", *where)
    plain = read_log(Cache(None, runs_dir=tmp_path / "runs"))["run_id"].iloc[-1]
    rc, out, err = _featx("predict", "--model", plain, "--tta", files[0], *where)
    assert rc == 2 and err.count("\n") == 1 and "fitted without augmented views" in err


@pytest.mark.slow  # about 12 s: a small grid and a refit on 1,500 view rows
def test_tune_trains_each_point_on_every_view_and_refits_a_view_ensemble(digit_views):
    from featx.selection.search import _path
    from featx.selection.spaces import Search

    X, y, split = digit_views
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    result = search(
        X,
        y,
        split,
        FitSpec(classifier="logreg", transforms={"standardize": True}, views=FLIP, tta=True),
        metric="accuracy",
        space=Search({"C": (0.1, 1.0)}),
        log=quiet,
    )
    assert isinstance(result.pipeline, ViewEnsemble) and result.pipeline.tta
    assert result.pipeline.estimator_[0].n_samples_seen_ == 2 * np.isin(split, ("train", "val")).sum()
    # a point's score is that of a ViewEnsemble with the same parameters fitted on the split's train images
    scored = _path("logreg", [{"C": 0.1}], X, y, train, val, {"standardize": True}, {}, 0, 1, 2, True)[0]
    model = FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True}, views=FLIP, tta=True)
    fitted = model.pipeline().fit(X[train], y[train])
    assert scored["accuracy"] == pytest.approx(np.mean(fitted.predict(X[val]) == y[val]))  # the same fit's score
    plain = _path("logreg", [{"C": 0.1}], X[:, :64], y, train, val, {"standardize": True}, {}, 0, 1)[0]
    assert plain["accuracy"] == pytest.approx(
        np.mean(
            FitSpec(classifier="logreg", params={"C": 0.1}, transforms={"standardize": True})
            .pipeline()
            .fit(X[train][:, :64], y[train])
            .predict(X[val][:, :64])
            == y[val]
        )
    )


def test_tune_refit_resolves_svm_gamma_on_view_rows_as_its_search_did(digit_views):
    from sklearn.preprocessing import StandardScaler

    from featx.classifiers.views import view_rows
    from featx.selection.spaces import Search

    X, y, split = digit_views
    result = search(
        X,
        y,
        split,
        FitSpec(classifier="svm", transforms={"standardize": True}, views=FLIP),
        metric="accuracy",
        space=Search({"C": (1.0,), "gamma_scale": (1.0,)}),
        log=quiet,
    )
    rows = view_rows(X[np.isin(split, ("train", "val"))], 2)  # (n * 2, 64): what the SVM is fitted on
    expected = 1.0 / (64 * StandardScaler().fit_transform(rows).var())
    assert result.pipeline.estimator_[-1].gamma == pytest.approx(expected)  # float64 variance of the same rows


def test_pipeline_steps_train_on_the_views_extract_caches():
    from featx.experiments.pipelines import _needed_views, _with_views

    top = {"view_seed": 7}
    steps = [{"kind": "fit", "views": "rand:2"}, {"kind": "compare", "views": "flip", "view_seed": 3}, {"kind": "tsne"}]
    assert _needed_views(steps, top) == ("id", "rand1s7", "rand2s7", "hflip")
    assert _with_views({"views": "rand:2"}, top) == {"views": "rand:2", "view_seed": 7}  # the seed extract used
    assert _with_views({"views": "rand:2", "view_seed": 3}, top)["view_seed"] == 3
    assert _with_views({}, {"views": "d4"}) == {"views": "d4"}
