"""Feature-space augmentation of the dense head (MixUp, Gaussian feature noise): train-time only, drawn from the
head's own seeded generator, reachable from fit/compare/tune flags and pipeline params, refused for other heads."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.classifiers import fit_pipeline, make_classifier
from featx.classifiers.dense import DenseHeadClassifier
from featx.errors import FeatxError
from featx.experiments.fit import fit
from featx.features.transforms import FNEDiscretizer
from featx.runs.listing import RunFilter
from featx.runs.models import load_model
from featx.selection.spec import fit_spec

from helpers import assert_float32_close, draws, seed_everything, split_rows, widest_sum

SMALL = {"hidden": (16,), "epochs": 4, "lr": 0.05}


def first_batches(head, X, targets, count=3):
    stream = head._minibatches(X, targets)
    return [next(stream) for _ in range(count)]


def one_hot(labels, n_classes):
    return np.eye(n_classes, dtype=np.float32)[labels]


def test_plain_minibatches_are_the_seeded_permutation_of_the_rows():
    """No augmentation draws nothing but each epoch's permutation: the batches plain fits always had."""
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    targets = one_hot(np.arange(20) % 3, 3)
    order = np.random.default_rng(5).permutation(20)
    batches = first_batches(DenseHeadClassifier(batch_size=8, random_state=5), X, targets)
    for (features, labels), rows in zip(batches, (order[:8], order[8:16], order[16:])):
        np.testing.assert_array_equal(features, X[rows])
        np.testing.assert_array_equal(labels, targets[rows])


def test_mixup_blends_features_and_labels_with_the_same_weights_into_soft_targets():
    labels = np.arange(64) % 4
    targets = one_hot(labels, 4)
    X = targets * 10  # features that are the labels scaled: a row mixed like its label stays 10x its label
    for features, soft in first_batches(DenseHeadClassifier(batch_size=16, mixup=0.4, random_state=0), X, targets):
        assert features.dtype == np.float32 and soft.dtype == np.float32
        # elementwise float32 blends (w a + (1 - w) b): a few roundings of u each, inside 1e-6 (17 u)
        np.testing.assert_allclose(features, soft * 10, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-6)
        assert ((soft > 0.01) & (soft < 0.99)).any()  # soft targets, not one-hot (16 Beta(0.4, 0.4) draws)
        assert (np.count_nonzero(soft, axis=1) <= 2).all()  # each row blends with exactly one partner


def test_feature_noise_perturbs_features_only_with_the_requested_spread():
    targets = one_hot(np.arange(400) % 2, 2)
    X = np.zeros((400, 50), np.float32)
    head = DenseHeadClassifier(batch_size=400, feature_noise=0.3, random_state=1)
    (features, labels), (again, _) = first_batches(head, X, targets, count=2)
    np.testing.assert_array_equal(labels, targets[np.random.default_rng(1).permutation(400)])
    # 20,000 seeded normal draws: the std's standard error is 0.3 / sqrt(2 * 20000) = 0.0015, the mean's 0.0021
    assert abs(features.std() - 0.3) < 0.01 and abs(features.mean()) < 0.01
    assert not np.array_equal(features, again)  # fresh noise every step


def test_augmented_minibatches_depend_on_random_state_only():
    X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    targets = one_hot(np.arange(50) % 5, 5)

    def stream(seed):
        head = DenseHeadClassifier(batch_size=16, mixup=0.2, feature_noise=0.1, random_state=seed)
        return np.concatenate([features for features, _ in first_batches(head, X, targets, count=8)])

    np.random.seed(1)
    first = stream(3)
    np.random.seed(2)
    np.testing.assert_array_equal(first, stream(3))
    assert not np.array_equal(first, stream(4))


@pytest.mark.parametrize("param", ["mixup", "feature_noise"])
def test_negative_augmentation_is_refused(param, digits):
    X, y, _ = digits
    with pytest.raises(InvalidParameterError, match=param):
        DenseHeadClassifier(**{param: -0.1}).fit(X[:100], y[:100])
    with pytest.raises(FeatxError, match=f"'{param}' parameter .* got -0.1; pass a value"):
        make_classifier("dense", {param: -0.1})


@pytest.mark.slow  # five small Keras fits: 5-15 s on 2 busy cores
def test_augmented_fits_differ_from_plain_are_reproducible_and_leave_global_rngs_alone(digits):
    X, y, _ = digits
    train, rest = slice(0, 600), slice(600, 900)
    plain = DenseHeadClassifier(**SMALL).fit(X[train], y[train])
    seed_everything(123)
    expected = draws()
    seed_everything(123)
    mixed = DenseHeadClassifier(**SMALL, mixup=0.3, feature_noise=0.05).fit(X[train], y[train])
    assert draws() == expected  # Python, NumPy and TensorFlow streams continue as if nothing was trained
    seed_everything(7)  # another caller state must not change the fit
    again = DenseHeadClassifier(**SMALL, mixup=0.3, feature_noise=0.05).fit(X[train], y[train])
    np.testing.assert_array_equal(mixed.predict_proba(X[rest]), again.predict_proba(X[rest]))
    assert mixed.history_.equals(again.history_)
    for alone in ({"mixup": 0.3}, {"feature_noise": 0.05}):
        head = DenseHeadClassifier(**SMALL, **alone).fit(X[train], y[train])
        assert not np.array_equal(head.model_.get_weights()[0], plain.model_.get_weights()[0]), alone
        assert not np.allclose(head.history_["loss"], plain.history_["loss"]), alone  # far beyond round-off


def test_validation_rows_are_never_augmented(digits):
    """Heavy MixUp and noise on training batches; the recorded val scores are exactly those of clean predictions."""
    X, y, split = digits
    train, val = split == "train", split == "val"
    head = DenseHeadClassifier(hidden=(16,), epochs=5, lr=0.05, mixup=1.0, feature_noise=0.5)
    head.fit(X[train], y[train], X_val=X[val], y_val=y[val])
    best = head.history_.set_index("epoch").loc[head.best_epoch_]
    # the same weights on the same rows: the same predictions (accuracy is a count; abs only for the division)
    assert best["val_accuracy"] == pytest.approx(accuracy_score(y[val], head.predict(X[val])), abs=1e-6)
    probabilities = head.predict_proba(X[val])
    # Keras' float32 mean of ~300 log-probabilities vs scikit-learn's float64 one: 300 u = 2e-5 relative
    assert best["val_loss"] == pytest.approx(log_loss(y[val], probabilities, labels=head.classes_), rel=1e-4)


# --- the command line: flags in real featx processes (tests/forkserver.py) on a real ELPV cache


def featx(*args):
    import forkserver

    return forkserver.server().run([str(a) for a in args])


@pytest.fixture(scope="module")
def lite0_cache(tmp_path_factory, fork_server):
    cache = tmp_path_factory.mktemp("dense_augment") / "cache"
    done = featx(
        "extract",
        "--data",
        "elpv",
        "--limit",
        60,
        "--backbone",
        "efficientnet_lite0",
        "--input-size",
        96,
        "--layers",
        "final",
        "--cache-dir",
        cache,
        "--quiet",
    )
    assert done.rc == 0, done.err
    return cache


@pytest.mark.slow  # an extraction and three dense fits in real processes: about 30 s
def test_cli_flags_and_pipeline_params_reach_the_dense_head(lite0_cache, tmp_path):
    from featx.runs.listing import list_runs as runs

    common = ["--mixup", 0.2, "--feature-noise", 0.1, "--epochs", 3, "--cache-dir", lite0_cache]
    fit = featx("fit", "--clf", "dense", "--layers", "final", *common)
    assert fit.rc == 0, fit.err
    compare = featx("compare", "--clf", "logreg,dense", "--layer-sets", "final", *common)
    assert compare.rc == 0, compare.err
    pipeline = tmp_path / "augment.toml"
    pipeline.write_text(
        'data = "elpv"\nbackbone = "efficientnet_lite0"\nlayers = ["final"]\n'
        "[extract]\nlimit = 60\ninput_size = 96\n"
        '[[steps]]\nkind = "fit"\nclf = "dense"\n'
        "params = { mixup = 0.4, feature_noise = 0.2, epochs = 3 }\n"
    )
    run = featx("run", pipeline, "--cache-dir", lite0_cache)
    assert run.rc == 0, run.err
    dense = runs(lite0_cache, where=RunFilter(clf="dense"))
    assert sorted(dense["params"]) == [
        '{"epochs": 3, "feature_noise": 0.1, "mixup": 0.2}',
        '{"epochs": 3, "feature_noise": 0.1, "mixup": 0.2}',
        '{"epochs": 3, "feature_noise": 0.2, "mixup": 0.4}',
    ], dense["params"].tolist()


# --- the head itself, on conftest's digits


@pytest.fixture(scope="module")
def dense_fit(digits_parts):
    """A dense head with a learning rate high enough that validation accuracy wobbles, stopped by patience: its
    last epochs are, by construction and on any machine, not better than its best, whose weights it restores
    (which epoch that is depends on the float32 trajectory, hence on the CPU)."""
    X_train, X_val, _, y_train, y_val, _ = digits_parts
    clf = DenseHeadClassifier(hidden=(32,), lr=0.3, epochs=40, patience=6)
    return clf.fit(X_train, y_train, X_val=X_val, y_val=y_val)


def test_dense_head_learns(dense_fit, digits_parts):
    history = dense_fit.history_
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    best = history.loc[history["epoch"] == dense_fit.best_epoch_, "val_accuracy"].item()
    assert best == history["val_accuracy"].max()
    assert best > history["val_accuracy"].iloc[0]
    _, _, X_test, _, _, y_test = digits_parts
    assert dense_fit.score(X_test, y_test) > 0.85  # a floor on learning (chance is 0.1), not round-off
    np.testing.assert_array_equal(dense_fit.classes_, np.arange(10))


def test_dense_head_restores_best_weights(dense_fit, digits_parts):
    _, X_val, _, _, y_val, _ = digits_parts
    history = dense_fit.history_.set_index("epoch")
    # Precondition, by patience: training ended epochs after the best one, else this test would prove nothing.
    assert dense_fit.best_epoch_ <= len(history) - 6
    best, last = history.loc[dense_fit.best_epoch_], history.iloc[-1]
    assert dense_fit.score(X_val, y_val) == pytest.approx(best["val_accuracy"], abs=1e-6)  # a count of rows
    # The val loss, continuous, tells the best epoch's weights from the last epoch's (accuracies may tie): the
    # restored model's is the best epoch's, up to Keras' float32 mean of ~300 logs vs scikit-learn's (300 u = 2e-5)
    restored = log_loss(y_val, dense_fit.predict_proba(X_val), labels=dense_fit.classes_)
    assert restored == pytest.approx(best["val_loss"], rel=1e-4)
    assert last["val_loss"] != pytest.approx(best["val_loss"], rel=1e-4)


def test_dense_head_patience_stops_early(digits_parts):
    X_train, X_val, _, y_train, y_val, _ = digits_parts
    clf = DenseHeadClassifier(hidden=(16,), lr=0.3, epochs=30, patience=2).fit(
        X_train, y_train, X_val=X_val, y_val=y_val
    )
    assert len(clf.history_) == clf.best_epoch_ + 2 < 30


def test_dense_pipeline_joblib_round_trip(digits_parts, tmp_path):
    X_train, _, X_test, y_train, _, _ = digits_parts
    labels = np.array(list("abcdefghij"))[y_train]  # string labels survive the round trip too
    head = DenseHeadClassifier(hidden=(32,), epochs=5)
    pipe = Pipeline([("fne", FNEDiscretizer()), ("clf", head)])
    pipe.fit(X_train, labels)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    loaded = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(loaded.predict(X_test), pipe.predict(X_test))
    np.testing.assert_allclose(loaded.predict_proba(X_test), pipe.predict_proba(X_test))  # same weights, same graph
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


def test_fit_pipeline_maps_validation_data_through_the_train_fitted_transforms(digits_parts):
    X_train, X_val, _, y_train, y_val, _ = digits_parts
    pipe = Pipeline([("fne", FNEDiscretizer()), ("clf", DenseHeadClassifier(hidden=(16,), lr=0.3, epochs=4))])
    fit_pipeline(pipe, X_train, y_train, X_val, y_val)
    fne, head = pipe.named_steps["fne"], pipe[-1]
    np.testing.assert_allclose(fne.mean_, X_train.mean(axis=0))  # fitted on train only; the same float64 mean
    # the head's validation accuracy is measured on the FNE-mapped val split, so its best epoch scores it exactly
    best = head.history_["val_accuracy"].max()
    assert pipe.score(X_val, y_val) == pytest.approx(best, abs=1e-6)  # the same weights' score on the same rows
    assert "validation_data" not in head.get_params()  # no data in the saved model's parameters


# --- scikit-learn's own estimator checks (the other estimators' files have theirs): about 200 s, a few Keras fits per check

DENSE_EXEMPT = {
    "check_fit2d_1sample": "one sample cannot be split into train and validation rows; the head says so with a "
    "FeatxError (featx's one-line user error), not the ValueError wording this check expects",
    "check_methods_sample_order_invariance": "a float32 network: another row order may take another kernel path "
    "(TensorFlow's own with TF_ENABLE_ONEDNN_OPTS=0), within float32 round-off, not the check's rtol 1e-7 and atol "
    "1e-9; test_dense_head_is_sample_order_invariant_up_to_float32_round_off asserts that bound",
}


@pytest.mark.slow
def test_dense_head_is_sample_order_invariant_up_to_float32_round_off(digits):
    X, y, split = digits
    head = DenseHeadClassifier(hidden=(8,), epochs=3, lr=0.1).fit(X[split == "train"], y[split == "train"])
    rows = X[split == "test"]
    order = np.random.default_rng(0).permutation(len(rows))
    expected = head.predict_proba(rows)[order]
    assert_float32_close(head.predict_proba(rows[order]), expected, widest_sum(head.model_))  # probabilities <= 1


@parametrize_with_checks(
    [DenseHeadClassifier(hidden=(8,), epochs=3, lr=0.1)], expected_failed_checks=lambda estimator: DENSE_EXEMPT
)
def test_dense_head_passes_sklearn_checks(estimator, check):
    check(estimator)


def test_dense_head_learns_keeps_best_epoch_and_round_trips(elpv_cache):
    # seed 1: a run whose best val epoch is neither the first nor the last, so keeping it is visible (on this
    # 37-image val split some seeds never beat their first epoch's val accuracy while the train loss falls)
    result = fit(
        None,
        "top_activation",
        fit_spec(
            "dense", params={"hidden": (64,), "epochs": 30, "lr": 0.01, "momentum": 0.9}, seed=1, standardize=True
        ),
        cache=elpv_cache,
        log=lambda *a: None,
    )
    head = result.pipeline[-1]
    history = pd.read_csv(result.folder / "history.csv")
    assert len(history) == 30 and (result.folder / "learning_curves.png").is_file()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0] / 10  # it learns
    assert history["val_accuracy"].max() > history["val_accuracy"].iloc[0]  # and generalizes beyond epoch 1
    assert head.best_epoch_ == history["val_accuracy"].idxmax() + 1 < 30  # not simply the last epoch
    assert result.metrics["val"]["accuracy"] == pytest.approx(history["val_accuracy"].max())  # best weights: its score
    model, _ = load_model(result.run_id, elpv_cache)
    X_test, _, _ = split_rows(elpv_cache, "top_activation", "test")
    # the saved weights in a reloaded graph: probabilities <= 1 through a 1,280-wide sum, float32 (1280 u = 7.6e-5)
    np.testing.assert_allclose(model.predict_proba(X_test), result.pipeline.predict_proba(X_test), atol=1e-4)
