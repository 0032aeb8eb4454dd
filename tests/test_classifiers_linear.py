"""featx.classifiers.linear: ExactLinearSVC reaches the optimum of LinearSVC's own objective, with liblinear's
cost rules (class weights one-vs-rest and binary, sample weights, intercept scaling), on both of its paths."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.classifiers.linear import ExactLinearSVC


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def converged_liblinear(**params):
    """LinearSVC run far past its defaults: its dual solver at a tolerance where it reaches the optimum."""
    return LinearSVC(dual=True, tol=1e-10, max_iter=500_000, **params)


def objective(model, X, y, C=1.0):
    """LinearSVC's primal objective (no class or sample weights, intercept_scaling 1) summed over the one-vs-rest
    problems of fitted multiclass `model`."""
    Xa = np.hstack([X, np.ones((len(X), 1))])
    total = 0.0
    for c, coef, b in zip(model.classes_, model.coef_, model.intercept_, strict=True):
        w = np.append(coef, b)
        slack = np.maximum(0.0, 1.0 - np.where(y == c, 1.0, -1.0) * (Xa @ w))
        total += 0.5 * w @ w + C * np.sum(slack**2)
    return total


def assert_same_solution(ours, theirs, X):
    """Two float64 solvers at one optimum: ours lands on it up to float64 rounding (a Newton step on the final
    active set is exact), liblinear at tol 1e-10 within its own tolerance, far inside 1e-6 of the largest
    coefficient (the objective is 1-strongly convex in w, so a near-optimal w is near the minimizer)."""
    scale = np.abs(theirs.coef_).max()
    np.testing.assert_allclose(ours.coef_, theirs.coef_, atol=1e-6 * scale)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, atol=1e-6 * scale)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_multiclass_fit_is_liblinears_converged_optimum(digits, C):
    X, y = digits
    ours = ExactLinearSVC(C=C).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = converged_liblinear(C=C).fit(X, y)
    assert ours.solver_ == "newton" and ours.coef_.shape == (10, 64) and ours.n_iter_ < 50
    assert_same_solution(ours, theirs, X)
    # the optimum's objective is the smallest, up to float64 rounding of its sums (n u64 = 2e-13 relative)
    assert objective(ours, X, y, C) <= objective(theirs, X, y, C) * (1 + 1e-9)


@pytest.mark.parametrize("class_weight", [{0: 3.0, 1: 0.5}, "balanced"])
def test_binary_costs_follow_liblinear_with_class_and_sample_weights(digits, class_weight):
    X, y = digits
    keep = (y == 0) | (y == 1)
    keep[np.flatnonzero(y == 1)[40:]] = False  # unbalanced, so "balanced" weighs the classes differently
    X, y = X[keep], y[keep]
    sample_weight = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    params = dict(C=0.05, class_weight=class_weight, intercept_scaling=3.0)
    ours = ExactLinearSVC(**params).fit(X, y, sample_weight=sample_weight)
    theirs = converged_liblinear(**params).fit(X, y, sample_weight=sample_weight)
    assert ours.coef_.shape == (1, 64) and ours.intercept_.shape == (1,)
    assert_same_solution(ours, theirs, X)


def test_one_vs_rest_weights_only_the_positive_rows_like_liblinear(digits):
    X, y = digits
    params = dict(C=0.1, class_weight={3: 5.0, 8: 0.2})
    ours = ExactLinearSVC(**params).fit(X, y)
    theirs = converged_liblinear(**params).fit(X, y)
    assert_same_solution(ours, theirs, X)
    unweighted = ExactLinearSVC(C=0.1).fit(X, y)
    assert not np.allclose(unweighted.coef_[3], ours.coef_[3], atol=1e-3)  # the weights did something (by far)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_more_features_than_rows_takes_the_dual_path_to_the_same_optimum(digits, fit_intercept):
    X, y = digits
    X, y = X[:45], y[:45]  # 45 rows, 64 columns: Woodbury on the rows' Gram matrix
    ours = ExactLinearSVC(C=0.5, fit_intercept=fit_intercept).fit(X, y)
    theirs = converged_liblinear(C=0.5, fit_intercept=fit_intercept).fit(X, y)
    assert_same_solution(ours, theirs, X)
    if not fit_intercept:
        assert ours.intercept_ == 0.0


def test_default_fit_is_converged_where_liblinears_default_stops_early(digits):
    X, y = digits
    X = X * 20.0  # badly scaled columns: liblinear's primal solver runs out of iterations
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = ExactLinearSVC().fit(X, y)
        assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
        default = LinearSVC().fit(X, y)
        assert [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert objective(ours, X, y) < objective(default, X, y)


def test_max_iter_reached_warns_like_liblinear(digits):
    X, y = digits
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        model = ExactLinearSVC(max_iter=1).fit(X, y)
    assert model.n_iter_ == 1


def test_liblinear_solver_and_other_losses_are_scikit_learns_fit(digits):
    X, y = digits
    params = dict(C=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for ours, theirs in [
            (ExactLinearSVC(solver="liblinear", **params), LinearSVC(**params)),
            (ExactLinearSVC(loss="hinge", **params), LinearSVC(loss="hinge", **params)),
            (ExactLinearSVC(penalty="l1", dual=False, **params), LinearSVC(penalty="l1", dual=False, **params)),
        ]:
            ours.fit(X, y)
            assert ours.solver_ == "liblinear"
            np.testing.assert_array_equal(ours.coef_, theirs.fit(X, y).coef_)
    with pytest.raises(ValueError, match="solver='newton' solves penalty='l2', loss='squared_hinge'"):
        ExactLinearSVC(solver="newton", loss="hinge").fit(X, y)


def test_one_class_is_refused_like_liblinear(digits):
    X, y = digits
    with pytest.raises(ValueError, match="at least 2 classes"):
        ExactLinearSVC().fit(X[y == 0], y[y == 0])


@parametrize_with_checks(
    [ExactLinearSVC(), ExactLinearSVC(solver="newton", class_weight="balanced")],
    expected_failed_checks=lambda estimator: (
        {
            # solver="auto" fits sparse X with liblinear, whose dual solver scikit-learn marks so for LinearSVC
            "check_sample_weight_equivalence_on_sparse_data": "sparse X goes to liblinear (LinearSVC's xfail)"
        }
        if estimator.solver == "auto"
        else {}
    ),
)
def test_exact_linear_svm_passes_sklearn_checks(estimator, check):
    check(estimator)
