"""Feature-space augmentation of the dense head (MixUp, Gaussian feature noise): train-time only, drawn from the
head's own seeded generator, reachable from fit/compare/tune flags and pipeline params, refused for other heads."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss
from sklearn.utils._param_validation import InvalidParameterError

from featx.classifiers import make_classifier
from featx.classifiers.dense import DenseHeadClassifier
from featx.errors import FeatxError
from test_process_state import draws, seed_everything

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
        np.testing.assert_allclose(features, soft * 10, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-6)
        assert ((soft > 0.01) & (soft < 0.99)).any()  # soft targets, not one-hot
        assert (np.count_nonzero(soft, axis=1) <= 2).all()  # each row blends with exactly one partner


def test_feature_noise_perturbs_features_only_with_the_requested_spread():
    targets = one_hot(np.arange(400) % 2, 2)
    X = np.zeros((400, 50), np.float32)
    head = DenseHeadClassifier(batch_size=400, feature_noise=0.3, random_state=1)
    (features, labels), (again, _) = first_batches(head, X, targets, count=2)
    np.testing.assert_array_equal(labels, targets[np.random.default_rng(1).permutation(400)])
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
        assert not np.allclose(head.history_["loss"], plain.history_["loss"]), alone


def test_validation_rows_are_never_augmented(digits):
    """Heavy MixUp and noise on training batches; the recorded val scores are exactly those of clean predictions."""
    X, y, split = digits
    train, val = split == "train", split == "val"
    head = DenseHeadClassifier(hidden=(16,), epochs=5, lr=0.05, mixup=1.0, feature_noise=0.5)
    head.fit(X[train], y[train], X_val=X[val], y_val=y[val])
    best = head.history_.set_index("epoch").loc[head.best_epoch_]
    assert best["val_accuracy"] == pytest.approx(accuracy_score(y[val], head.predict(X[val])), abs=1e-6)
    probabilities = head.predict_proba(X[val])
    assert best["val_loss"] == pytest.approx(log_loss(y[val], probabilities, labels=head.classes_), rel=1e-4)


# --- the command line: flags in real featx processes (tests/forkserver.py) on a real ELPV cache

def featx(*args):
    import forkserver

    return forkserver.server().run([str(a) for a in args])


@pytest.fixture(scope="module")
def lite0_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("dense_augment") / "cache"
    done = featx("extract", "--data", "elpv", "--limit", 60, "--backbone", "efficientnet_lite0", "--input-size", 96,
                 "--layers", "final", "--cache-dir", cache, "--quiet")
    assert done.rc == 0, done.err
    return cache


@pytest.mark.slow  # an extraction and three dense fits in real processes: about 30 s
def test_cli_flags_and_pipeline_params_reach_the_dense_head(lite0_cache, tmp_path):
    from featx.experiments.runs import runs

    common = ["--mixup", 0.2, "--feature-noise", 0.1, "--epochs", 3, "--cache-dir", lite0_cache]
    fit = featx("fit", "--clf", "dense", "--layers", "final", *common)
    assert fit.rc == 0, fit.err
    compare = featx("compare", "--clf", "logreg,dense", "--layer-sets", "final", *common)
    assert compare.rc == 0, compare.err
    pipeline = tmp_path / "augment.toml"
    pipeline.write_text('data = "elpv"\nbackbone = "efficientnet_lite0"\nlayers = ["final"]\n'
                        '[extract]\nlimit = 60\ninput_size = 96\n'
                        '[[steps]]\nkind = "fit"\nclf = "dense"\n'
                        'params = { mixup = 0.4, feature_noise = 0.2, epochs = 3 }\n')
    run = featx("run", pipeline, "--cache-dir", lite0_cache)
    assert run.rc == 0, run.err
    dense = runs(lite0_cache, clf="dense")
    assert sorted(dense["params"]) == [
        '{"epochs": 3, "feature_noise": 0.1, "mixup": 0.2}',
        '{"epochs": 3, "feature_noise": 0.1, "mixup": 0.2}',
        '{"epochs": 3, "feature_noise": 0.2, "mixup": 0.4}'], dense["params"].tolist()


@pytest.mark.parametrize("command, clf", [("fit", "rf"), ("compare", "rf,logreg"), ("tune", "logreg")])
@pytest.mark.parametrize("flag", ["--mixup", "--feature-noise"])
def test_augmentation_flags_without_a_dense_head_are_one_line_errors(tmp_path, capsys, command, clf, flag):
    import featx.cli

    where = ["--layer-sets" if command == "compare" else "--layers", "final", "--cache-dir", str(tmp_path)]
    assert featx.cli.main([command, "--clf", clf, flag, "0.2", *where]) == 2
    assert capsys.readouterr().err == (f"error: {flag} augments the dense head's training and --clf {clf} has no "
                                       f"dense head; add --clf dense or drop {flag}\n")
