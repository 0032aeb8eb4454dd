"""featx.classifiers.svm: BlasSVC is scikit-learn's SVC (the same support vectors, dual coefficients, intercepts,
decision values and predictions) with its kernels computed by BLAS, on digits and on real ELPV features.

Tolerances: the kernel matrices differ from libsvm's by float64 rounding (about 1e-16 relative, the sums run in
another order); libsvm reads them through its float32 kernel cache, so the solver takes the same steps and the
solutions agree to rounding. Decision values are held to 1e-8 (the issue's bound), coefficients to 1e-9 of C.
"""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

import featx.classifiers.gram as gram_module
import featx.classifiers.svm as svm_module
from featx.cache.store import Cache
from featx.classifiers import make_classifier
from featx.classifiers.gram import Gram, max_kernel_rows
from featx.classifiers.svm import BlasSVC
from featx.errors import FeatxError
from featx.features.load import load


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:800] / 16.0, y[:800], X[800:1300] / 16.0


def assert_same_svm(ours: BlasSVC, theirs: SVC, X_test, decision_atol=1e-8):
    """Fitted `ours` (by BLAS) is `theirs` (scikit-learn's SVC on the same rows) up to rounding."""
    assert ours.solver_ == "blas"
    np.testing.assert_array_equal(ours.support_, theirs.support_)
    np.testing.assert_array_equal(ours.n_support_, theirs.n_support_)
    np.testing.assert_array_equal(ours.support_vectors_, theirs.support_vectors_)
    scale = max(1.0, ours.C)
    np.testing.assert_allclose(ours.dual_coef_, theirs.dual_coef_, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(ours.decision_function(X_test), theirs.decision_function(X_test), atol=decision_atol)
    np.testing.assert_array_equal(ours.predict(X_test), theirs.predict(X_test))


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"gamma": "auto", "C": 10.0},
        {"gamma": 0.2, "C": 0.5, "class_weight": "balanced"},
        {"kernel": "linear", "C": 0.01},
        {"kernel": "poly", "degree": 3, "coef0": 1.0, "gamma": 0.05},
        {"kernel": "sigmoid", "gamma": 0.01, "coef0": 0.1},
        {"decision_function_shape": "ovo", "class_weight": {0: 2.0, 3: 0.5}},
        {"break_ties": True, "C": 3.0},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults",
)
def test_the_same_svm_as_svc_on_digits(digits, params):
    X, y, X_test = digits
    assert_same_svm(BlasSVC(**params).fit(X, y), SVC(**params).fit(X, y), X_test)


def test_binary_signs_sample_weights_and_float32_rows_follow_svc(digits):
    X, y, X_test = digits
    binary = (y >= 5).astype(int)
    assert_same_svm(BlasSVC(C=2.0).fit(X, binary), SVC(C=2.0).fit(X, binary), X_test)
    weights = np.ones(len(y))
    weights[::3], weights[1::7] = 0.0, 2.5  # libsvm drops rows of weight 0 and numbers the rest
    assert_same_svm(
        BlasSVC().fit(X, y, sample_weight=weights), SVC().fit(X, y, sample_weight=weights), X_test.astype(np.float32)
    )
    X32 = X.astype(np.float32)  # SVC fits float64: so does BlasSVC, gamma="scale" of the float64 rows
    assert_same_svm(BlasSVC().fit(X32, y), SVC().fit(X32, y), X_test)


def test_probabilities_follow_svc_with_probability_true(digits):
    X, y, X_test = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # probability=True is deprecated in scikit-learn 1.9
        ours = BlasSVC(probability=True, random_state=0).fit(X[:600], y[:600])
        theirs = SVC(probability=True, random_state=0).fit(X[:600], y[:600])
        np.testing.assert_allclose(ours.predict_proba(X_test), theirs.predict_proba(X_test), rtol=0, atol=1e-8)
        binary = (y[:600] >= 5).astype(int)
        ours2 = BlasSVC(probability=True, random_state=0).fit(X[:600], binary)
        theirs2 = SVC(probability=True, random_state=0).fit(X[:600], binary)
        np.testing.assert_allclose(ours2.predict_proba(X_test), theirs2.predict_proba(X_test), rtol=0, atol=1e-8)
    assert not hasattr(BlasSVC().fit(X[:200], y[:200]), "predict_proba")  # as SVC's default


def test_the_fitted_state_is_a_fitted_svc(digits):
    """SVC's own (libsvm) prediction code, run on BlasSVC's attributes, gives BlasSVC's numbers."""
    X, y, X_test = digits
    ours = BlasSVC(gamma=0.1).fit(X, y)
    np.testing.assert_allclose(SVC.decision_function(ours, X_test), ours.decision_function(X_test), atol=1e-10)
    np.testing.assert_array_equal(SVC.predict(ours, X_test), ours.predict(X_test))
    linear = BlasSVC(kernel="linear").fit(X, y)
    np.testing.assert_allclose(linear.coef_, SVC(kernel="linear").fit(X, y).coef_, atol=1e-9)


def test_prediction_streams_blocks_of_rows_against_the_support_vectors(digits, monkeypatch):
    X, y, X_test = digits
    model = BlasSVC().fit(X, y)
    whole = model.decision_function(X_test)
    products = []
    original_norms = svm_module.squared_norms

    def watch(rows):
        products.append(rows.shape)
        return original_norms(rows)

    monkeypatch.setattr(svm_module, "PREDICT_BLOCK_BYTES", 8 * len(model.support_) * 50)  # 50 test rows a block
    monkeypatch.setattr(svm_module, "squared_norms", watch)
    np.testing.assert_array_equal(model.decision_function(X_test), whole)
    shapes = products[1:]  # the first: the support vectors' norms
    assert products[0] == model.support_vectors_.shape
    assert max(rows for rows, _ in shapes) == 50 and sum(rows for rows, _ in shapes) == len(X_test)


def test_a_shared_gram_gives_the_same_models_and_a_wrong_one_is_refused(digits):
    X, y, X_test = digits
    rows = np.arange(0, len(X), 2)
    gram = Gram(X).subset(rows)
    for params in ({"C": 0.5}, {"C": 5.0, "gamma": 0.3}, {"kernel": "poly", "degree": 2}):
        shared = BlasSVC(**params).fit(X[rows], y[rows], gram=gram)
        alone = BlasSVC(**params).fit(X[rows], y[rows])
        np.testing.assert_array_equal(shared.support_, alone.support_)
        np.testing.assert_allclose(shared.decision_function(X_test), alone.decision_function(X_test), atol=1e-10)
    with pytest.raises(ValueError, match="gram does not describe X"):
        BlasSVC().fit(X[rows + 1], y[rows + 1], gram=gram)
    with pytest.raises(ValueError, match="gram does not describe X"):
        BlasSVC().fit(2.0 * X[rows], y[rows], gram=gram)


def test_held_out_rows_are_predicted_from_the_shared_products(digits, monkeypatch):
    """A split's train and held-out rows in one Gram: every model fitted on the train part predicts the held-out
    part from its products (Gram.against), as it would from the rows themselves, in blocks."""
    X, y, X_test = digits
    weights = np.ones(len(y))
    weights[::5] = 0.0  # support vectors numbered after libsvm drops these rows: the products' columns follow
    train, held = Gram([X, X_test]).parts()
    cross = held.against(train)
    monkeypatch.setattr(svm_module, "PREDICT_BLOCK_BYTES", 8 * 1100 * 64)  # blocks of 64 or more test rows
    for params in ({"C": 3.0}, {"kernel": "poly", "degree": 2, "break_ties": True}, {"kernel": "sigmoid"}):
        model = BlasSVC(**params).fit(X, y, sample_weight=weights, gram=train)
        np.testing.assert_allclose(model.decision_function(X_test, gram=cross), model.decision_function(X_test))
        np.testing.assert_array_equal(model.predict(X_test, gram=cross), model.predict(X_test))
    with pytest.raises(ValueError, match="gram does not pair X's rows"):
        model.predict(X_test[::-1], gram=cross)
    with pytest.raises(ValueError, match="gram does not pair X's rows"):
        BlasSVC().fit(X[:400], y[:400]).predict(X_test, gram=cross)  # fitted on other rows


def test_solver_libsvm_is_scikit_learns_svc_and_auto_falls_back_where_blas_does_not_apply(digits, monkeypatch):
    X, y, X_test = digits
    plain = BlasSVC(solver="libsvm").fit(X, y)
    assert plain.solver_ == "libsvm"
    np.testing.assert_array_equal(plain.decision_function(X_test), SVC().fit(X, y).decision_function(X_test))
    kernel = X @ X.T
    precomputed = BlasSVC(kernel="precomputed").fit(kernel, y)
    assert precomputed.solver_ == "libsvm" and precomputed.score(X_test @ X.T, np.zeros(len(X_test))) >= 0
    sparse = BlasSVC().fit(scipy.sparse.csr_matrix(X), y)
    assert sparse.solver_ == "libsvm"
    dense_of_sparse = BlasSVC(solver="blas").fit(scipy.sparse.csr_matrix(X), y)
    np.testing.assert_array_equal(
        dense_of_sparse.predict(scipy.sparse.csr_matrix(X_test)), sparse.predict(scipy.sparse.csr_matrix(X_test))
    )
    with pytest.raises(ValueError, match="solver='blas' computes the kernels"):
        BlasSVC(solver="blas", kernel="precomputed").fit(kernel, y)
    monkeypatch.setattr(gram_module, "KERNEL_MAX_BYTES", 8 * 500**2)  # a budget of 500 rows
    assert max_kernel_rows() == 500
    assert BlasSVC().fit(X, y).solver_ == "libsvm" and BlasSVC().fit(X[:500], y[:500]).solver_ == "blas"
    assert BlasSVC(solver="blas").fit(X, y).solver_ == "blas"  # asked for: no budget


def test_registry_parameters_clone_and_pickle(digits):
    svm = make_classifier("svm", {"C": 3.0, "solver": "libsvm"}, seed=4)
    assert isinstance(svm, BlasSVC) and svm.random_state == 4 and svm.kernel == "rbf"
    assert clone(svm).get_params() == svm.get_params()
    with pytest.raises(FeatxError, match="'solver' parameter of BlasSVC must be a str among"):
        make_classifier("svm", {"solver": "fast"})
    X, y, _ = digits
    fitted = make_classifier("svm").fit(X, y)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict(X), fitted.predict(X))


def test_the_same_svm_as_svc_on_elpv_features(elpv_cache):
    """Real features (ELPV through EfficientNet-Lite0, every cached layer, standardized as --standardize does)."""
    entry = Cache(elpv_cache).open()
    X, y, meta = load(entry, layers="blocks,top_activation")
    split = meta["split"].to_numpy()
    scaler = StandardScaler().fit(X[split == "train"])
    X_train, y_train = scaler.transform(X[split == "train"]), y[split == "train"]
    X_eval = scaler.transform(X[split != "train"])
    for params in ({}, {"C": 10.0, "class_weight": "balanced"}):
        assert_same_svm(BlasSVC(**params).fit(X_train, y_train), SVC(**params).fit(X_train, y_train), X_eval)


@parametrize_with_checks(
    [BlasSVC(class_weight="balanced"), BlasSVC(solver="libsvm")],
    expected_failed_checks=lambda estimator: {
        # scikit-learn's own expected failures for SVC (sklearn.utils._test_common.instance_generator): libsvm's
        # sample weights rescale C per row, which is not the same as repeating rows
        f"check_sample_weight_equivalence_on_{kind}_data": "sample_weight is not equivalent to removing/repeating "
        "samples (SVC's xfail)"
        for kind in ("dense", "sparse")
    },
)
def test_blas_svm_passes_sklearn_checks(estimator, check):
    check(estimator)
