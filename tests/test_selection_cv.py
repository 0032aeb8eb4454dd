"""Model selection on real ELPV features: paired folds over train+val only, CIs, in-fold transforms, baselines."""

from __future__ import annotations

import numpy as np
import pytest

import featx
from featx.classifiers import make_classifier, make_pipeline
from featx.errors import FeatxError
from featx.features.transforms import build_feature_pipeline
from featx.selection.cv import cross_validate, make_folds, paired_difference, summarize, val_folds
from featx.selection.metrics import METRICS, default_metric, score


@pytest.fixture(scope="module")
def data(elpv_cache):
    X, y, meta = featx.load(None, "top_activation", cache=elpv_cache)
    return X, y, meta["split"].to_numpy()


def linear(**transforms):
    return make_pipeline("linear-svm", {"C": 0.001}, build_feature_pipeline(**transforms), seed=0, n_jobs=1)


def test_folds_hold_only_train_and_val_rows_each_once_per_repeat(data):
    _, y, split = data
    folds = make_folds(y, split, n_splits=5, n_repeats=2, seed=0)
    selection = np.flatnonzero(split != "test")
    assert len(folds) == 10 and folds.label == "cv5x2"
    for repeat in range(2):
        held_out = np.concatenate([e for (t, e), r in zip(folds.splits, folds.repeats) if r == repeat])
        assert np.array_equal(np.sort(held_out), selection)
    for train, held_out in folds.splits:
        assert not set(train) & set(held_out)
        assert (split[np.concatenate([train, held_out])] != "test").all()


def test_folds_are_identical_for_a_seed_so_rows_are_paired(data):
    _, y, split = data
    first, again = make_folds(y, split, 5, 2, seed=3), make_folds(y, split, 5, 2, seed=3)
    assert first.fingerprint() == again.fingerprint()
    assert all(np.array_equal(a, b) for pa, pb in zip(first.splits, again.splits) for a, b in zip(pa, pb))
    assert make_folds(y, split, 5, 2, seed=4).fingerprint() != first.fingerprint()
    assert first.splits[0][1].tolist() != first.splits[5][1].tolist()  # repeats reshuffle


def test_test_rows_never_reach_cross_validation(data):
    X, y, split = data
    folds = make_folds(y, split, 4, 1, seed=0)
    poisoned = X.copy()
    poisoned[split == "test"] = np.nan  # any read of a test row would fail the fit or change a score
    clean, dirty = (cross_validate(linear(standardize=True), A, y, folds).scores for A in (X, poisoned))
    assert dirty[list(METRICS)].notna().all().all()
    assert np.array_equal(clean[list(METRICS)].to_numpy(), dirty[list(METRICS)].to_numpy())


def test_groups_keep_the_views_of_one_image_in_one_fold(data):
    _, y, split = data
    views = 3
    y3, split3, groups = np.repeat(y, views), np.repeat(split, views), np.repeat(np.arange(len(y)), views)
    folds = make_folds(y3, split3, 5, 2, seed=0, groups=groups)
    for train, held_out in folds.splits:
        assert not set(groups[train]) & set(groups[held_out])
    plain = make_folds(y3, split3, 5, 1, seed=0)  # without groups, views of one image do cross folds
    assert any(set(groups[t]) & set(groups[e]) for t, e in plain.splits)


def test_transforms_are_refitted_on_each_folds_train_rows(data):
    X, y, split = data
    folds = make_folds(y, split, 3, 1, seed=0)
    result = cross_validate(linear(discretize="fne"), X, y, folds, return_estimators=True)
    full_mean = X[split != "test"].mean(axis=0, dtype=np.float64)
    for (train, _), fitted in zip(folds.splits, result.estimators):
        fne = fitted.named_steps["fne"]
        # float64 means of the same float32 rows (n u64 = 1e-13); other rows' means differ by far more
        np.testing.assert_allclose(fne.mean_, X[train].mean(axis=0, dtype=np.float64), rtol=1e-6)
        assert not np.allclose(fne.mean_, full_mean, rtol=1e-3)
    assert not np.array_equal(
        result.estimators[0].named_steps["fne"].mean_, result.estimators[1].named_steps["fne"].mean_
    )


def test_ci_shrinks_with_more_repeats(data):
    X, y, split = data
    widths = {}
    for repeats in (1, 6):
        result = cross_validate(linear(standardize=True), X, y, make_folds(y, split, 5, repeats, seed=0), n_jobs=2)
        widths[repeats] = summarize(result)["accuracy_ci95"]
    assert 0 < widths[6] < widths[1]


def test_majority_baseline_scores_the_majority_share(data):
    X, y, split = data
    folds = make_folds(y, split, 5, 1, seed=0)
    scores = cross_validate(make_classifier("majority"), X, y, folds).scores
    for (train, held_out), accuracy, balanced in zip(folds.splits, scores["accuracy"], scores["balanced_accuracy"]):
        majority = np.bincount(y[train]).argmax()
        assert accuracy == pytest.approx(np.mean(y[held_out] == majority))  # counts: exact up to the division
        assert balanced == pytest.approx(1 / len(np.unique(y[held_out])))
    stratified = summarize(cross_validate(make_classifier("stratified", seed=0), X, y, folds))
    assert stratified["balanced_accuracy_mean"] < 0.45  # chance level for 4 classes is 0.25 (seeded draws)


def test_default_metric_follows_class_balance(data):
    _, y, split = data
    metric, reason = default_metric(y[split != "test"])
    assert metric == "balanced_accuracy" and "imbalanced" in reason  # ELPV: 57% one class
    assert default_metric(np.array([0] * 12 + [1] * 10))[0] == "accuracy"


def test_paired_difference_names_the_winner_or_says_within_noise(data):
    X, y, split = data
    folds = make_folds(y, split, 5, 2, seed=0)
    model = cross_validate(linear(standardize=True), X, y, folds, n_jobs=2)
    majority = cross_validate(make_classifier("majority"), X, y, folds)
    beats = paired_difference(majority, model, "f1_macro", "majority", "linear-svm")
    assert beats.mean < -beats.ci95 < 0 and beats.verdict.startswith("linear-svm beats majority by")
    same = paired_difference(model, model, "balanced_accuracy", "linear-svm", "itself")
    assert same.mean == 0 and "within noise" in same.verdict
    other = cross_validate(make_classifier("majority"), X, y, make_folds(y, split, 5, 2, seed=1))
    with pytest.raises(FeatxError, match="different folds"):
        paired_difference(model, other, "accuracy")


def test_val_folds_and_bad_requests(data):
    X, y, split = data
    ((train, val),) = val_folds(split).splits
    assert (split[train] == "train").all() and (split[val] == "val").all()
    single = cross_validate(make_classifier("majority"), X, y, val_folds(split))
    assert np.isnan(summarize(single)["accuracy_ci95"])
    with pytest.raises(FeatxError, match="smallest class"):
        make_folds(y, split, n_splits=500)
    with pytest.raises(FeatxError, match="were made for"):
        cross_validate(make_classifier("majority"), X[:10], y[:10], val_folds(split))


def test_score_matches_hand_counts():
    y_true, y_pred = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
    scores = score(y_true, y_pred)
    # hand counts: exact fractions up to float64 division (approx's rel 1e-6)
    assert scores["accuracy"] == 0.75 and scores["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
