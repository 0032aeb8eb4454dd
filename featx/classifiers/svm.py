"""The exact kernel SVM at BLAS speed: scikit-learn's SVC, its kernel matrices computed by one matrix product each.

scikit-learn's `SVC` hands the feature rows to libsvm, which evaluates every kernel entry it needs in a scalar loop
over the features: on all 2,624 ELPV cells (1,705 train rows of 25,096 standardized features) the fit took 22 s and
the decision values of 656 test rows 18 s. Every kernel it offers is an elementwise function of the rows' inner
products (featx.classifiers.gram), which BLAS computes at the machine's full rate: `BlasSVC` computes the (n, n)
training kernel that way and trains the same libsvm on it as a precomputed kernel (`SVC(kernel="precomputed")`), so
the solver sees the same matrix (up to float64 rounding, below the float32 libsvm keeps its kernel cache in) and
returns the same support vectors, dual coefficients and intercepts. Predictions then stream the test rows, a block
at a time, against the support vectors only: one product per block, then the pairwise decision values as one more.

A fitted `BlasSVC` holds exactly the state a fitted `SVC` holds (support_, support_vectors_, dual_coef_,
intercept_, n_support_, probA_/probB_, the fitted gamma), so it is that SVC; `solver="libsvm"` fits and predicts
with scikit-learn's own code, unchanged, for comparison (as `solver="liblinear"` in featx.classifiers.linear).

Memory: the training kernel is n_train^2 float64 values (20,000 rows: 3.2 GB). "auto" takes this path up to
featx.classifiers.gram.KERNEL_MAX_BYTES (max_kernel_rows() rows) and libsvm's own kernel loop beyond it (memory
linear in the rows, time quadratic in the rows times the features: hours at that size); the CLI says so in one line
(featx.classifiers.registry.large_n_note). Prediction holds one block of PREDICT_BLOCK_BYTES.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from sklearn.svm import SVC
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _ovr_decision_function
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.classifiers.gram import Gram, blas_threads_for, gram_matrix, max_kernel_rows, squared_norms

BLAS_KERNELS = ("linear", "poly", "rbf", "sigmoid")
PREDICT_BLOCK_BYTES = 64 * 2**20  # one block of test rows' kernel against the support vectors
MIN_PROBABILITY = 1e-7  # libsvm clips each pairwise probability to [1e-7, 1 - 1e-7]


class BlasSVC(SVC):
    """SVC whose kernels are computed by BLAS and handed to libsvm precomputed (see the module docstring).

    Parameters
    ----------
    solver : {"auto", "blas", "libsvm"}, default "auto"
        "blas": the training kernel by BLAS, libsvm trained on it, predictions by BLAS against the support vectors
        (kernels linear, poly, rbf and sigmoid; sparse X is densified). "libsvm": scikit-learn's SVC fit and
        predictions, unchanged. "auto": "blas" for those kernels on dense X with at most max_kernel_rows() rows,
        else "libsvm" (a callable or precomputed kernel, sparse X, or a kernel past KERNEL_MAX_BYTES).
    C, kernel, degree, gamma, coef0, shrinking, probability, tol, cache_size, class_weight, verbose, max_iter,
    decision_function_shape, break_ties, random_state : as SVC, with SVC's meaning: gamma "scale" is
        1 / (n_features * X.var()) and "auto" 1 / n_features, of the rows fitted; libsvm's solver takes C, the
        class weights, sample weights, tol, shrinking, cache_size (its cache of kernel columns), max_iter and
        random_state (probability's internal cross-validation) as it does in SVC. probability=True (deprecated
        in scikit-learn 1.9, as in SVC) fits libsvm's Platt scaling on the precomputed kernel and gives
        predict_proba, computed here from the same decision values as libsvm.

    Attributes
    ----------
    Those of a fitted SVC: support_ (n_SV,), support_vectors_ (n_SV, n_features), n_support_ (n_classes,),
    dual_coef_ (n_classes - 1, n_SV), intercept_ (n_classes * (n_classes - 1) / 2,), classes_, class_weight_,
    fit_status_, n_iter_, probA_, probB_, shape_fit_, n_features_in_; and solver_ : str, the solver that fitted
    ("blas" or "libsvm").

    fit(X, y, sample_weight=None, gram=None) : gram, a featx.classifiers.gram.Gram of exactly X's rows (e.g.
    `Gram(X_all).subset(rows)` for X = X_all[rows]), or an unbound Gram() (bound to X here), lets fits on the same
    rows (other gamma, C, degree, coef0) share one matrix product; it is checked against X's row norms.
    """

    _parameter_constraints = {**SVC._parameter_constraints, "solver": [StrOptions({"auto", "blas", "libsvm"})]}

    def __init__(
        self,
        *,
        C=1.0,
        kernel="rbf",
        degree=3,
        gamma="scale",
        coef0=0.0,
        shrinking=True,
        probability="deprecated",
        tol=1e-3,
        cache_size=200,
        class_weight=None,
        verbose=False,
        max_iter=-1,
        decision_function_shape="ovr",
        break_ties=False,
        random_state=None,
        solver="auto",
    ):
        super().__init__(
            C=C,
            kernel=kernel,
            degree=degree,
            gamma=gamma,
            coef0=coef0,
            shrinking=shrinking,
            probability=probability,
            tol=tol,
            cache_size=cache_size,
            class_weight=class_weight,
            verbose=verbose,
            max_iter=max_iter,
            decision_function_shape=decision_function_shape,
            break_ties=break_ties,
            random_state=random_state,
        )
        self.solver = solver

    def fit(self, X, y, sample_weight=None, gram=None):
        """X : array of shape (n_samples, n_features); y : (n_samples,); sample_weight : (n_samples,) or None;
        gram : featx.classifiers.gram.Gram of X's rows, or None (then the kernel is computed from X)."""
        self._validate_params()
        if self.solver == "blas" and not self.uses_gram():
            raise ValueError(
                f"solver='blas' computes the kernels {', '.join(BLAS_KERNELS)}; got kernel={self.kernel!r} "
                "(use solver='libsvm')"
            )
        if not self.uses_gram() or (self.solver == "auto" and scipy.sparse.issparse(X)):
            return self._fit_libsvm(X, y, sample_weight)
        if scipy.sparse.issparse(X):  # solver="blas" asked for: it works on dense rows
            X = X.toarray()
        X, y = validate_data(self, X, y, dtype=np.float64, order="C")
        if not self.uses_gram(X.shape[0]):  # "auto" past the kernel budget
            return self._fit_libsvm(X, y, sample_weight)
        if gram is not None and not gram.bind(X).describes(X):
            raise ValueError(
                f"gram does not describe X: it holds {gram.n_rows} rows whose norms differ from X's "
                f"{X.shape[0]} rows; pass the Gram of the rows fitted, after the same transforms"
            )
        gamma = self._gamma_of(X)
        if gram is None:
            K = gram_matrix(X)
            norms = np.diagonal(K).copy()
        else:
            K, norms = gram.block(), gram.norms()
        _kernel_in_place(K, norms, norms, self.kernel, gamma, self.degree, self.coef0, clip=False)
        inner = SVC(
            kernel="precomputed",
            C=self.C,
            shrinking=self.shrinking,
            probability=self.probability,
            tol=self.tol,
            cache_size=self.cache_size,
            class_weight=self.class_weight,
            verbose=self.verbose,
            max_iter=self.max_iter,
            decision_function_shape=self.decision_function_shape,
            break_ties=self.break_ties,
            random_state=self.random_state,
        )
        inner.fit(K, y, sample_weight=sample_weight)  # its warnings are SVC's: max_iter, `probability` deprecated
        del K
        self._adopt(inner, X, gamma, sample_weight)
        return self

    def uses_gram(self, n_rows: int | None = None) -> bool:
        """Whether fit would use a `gram` on n_rows rows (None: any number "auto" takes): the hook by which callers
        (featx.classifiers.gram.takes_gram) skip computing a Gram for solver="libsvm", a callable or precomputed
        kernel, or past the kernel budget. Sparse rows, which "auto" hands to libsvm, are the caller's to know."""
        if self.solver == "libsvm" or not (isinstance(self.kernel, str) and self.kernel in BLAS_KERNELS):
            return False
        return self.solver == "blas" or n_rows is None or n_rows <= max_kernel_rows()

    def _fit_libsvm(self, X, y, sample_weight):
        super().fit(X, y, sample_weight=sample_weight)
        self.solver_ = "libsvm"
        return self

    def _gamma_of(self, X) -> float:
        """SVC's gamma for rows X (n, d): "scale" 1 / (d * X.var()) (1 where the variance is 0), "auto" 1 / d."""
        if self.gamma == "scale":
            variance = X.var()
            return 1.0 / (X.shape[1] * variance) if variance != 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / X.shape[1]
        return self.gamma

    def _adopt(self, inner: SVC, X, gamma: float, sample_weight) -> None:
        """Take the precomputed-kernel SVC's solution as this SVC's fitted state (SVC's own attribute layout)."""
        support = inner.support_
        if sample_weight is not None:  # libsvm drops rows of weight <= 0 and numbers the rest (as SVC's support_)
            support_rows = np.flatnonzero(np.asarray(sample_weight) > 0)[support]
        else:
            support_rows = support
        binary = len(inner.classes_) == 2
        self.classes_, self.class_weight_ = inner.classes_, inner.class_weight_
        self.support_, self.support_vectors_, self._support_rows = support, X[support_rows], support_rows
        self._n_support = inner.n_support_
        self.dual_coef_, self.intercept_ = inner.dual_coef_, inner.intercept_
        # SVC's internal (libsvm) signs: binary problems are flipped in the public attributes
        self._dual_coef_ = -self.dual_coef_ if binary else self.dual_coef_
        self._intercept_ = -self.intercept_ if binary else self.intercept_
        self._probA, self._probB = inner._probA, inner._probB  # probA_/probB_: deprecated properties over these
        self.fit_status_, self.n_iter_, self._num_iter = inner.fit_status_, inner.n_iter_, inner.n_iter_
        self.shape_fit_, self._gamma, self._sparse = X.shape, float(gamma), False
        self._effective_probability = self.probability not in ("deprecated", False)
        self.solver_ = "blas"

    def decision_function(self, X, gram=None):
        """Array of shape (n_samples,) for two classes, else (n_samples, n_classes) with decision_function_shape
        "ovr" or (n_samples, n_classes * (n_classes - 1) / 2) with "ovo", as SVC. gram : None, or a
        featx.classifiers.gram.Cross of X's rows against the rows this SVC was fitted on (Gram.against), whose
        inner products then stand for X's against the support vectors: several models fitted on one Gram predict
        the same held-out rows from one product (it is checked against the row norms of X and of the support
        vectors)."""
        if self._by_libsvm():
            return super().decision_function(X)
        dec = self._ovo_decision(X, gram)
        if len(self.classes_) == 2:
            return -dec.ravel()
        if self.decision_function_shape == "ovr":
            return _ovr_decision_function(dec < 0, -dec, len(self.classes_))
        return dec

    def predict(self, X, gram=None):
        """Class labels, shape (n_samples,): libsvm's one-vs-one vote (ties to the first class), or with break_ties
        the argmax of the "ovr" decision function, as SVC. gram : as in decision_function."""
        if self._by_libsvm():
            return super().predict(X)
        if self.break_ties and self.decision_function_shape == "ovo":
            raise ValueError("break_ties must be False when decision_function_shape is 'ovo'")
        if self.break_ties and self.decision_function_shape == "ovr" and len(self.classes_) > 2:
            return self.classes_.take(np.argmax(self.decision_function(X, gram), axis=1))
        return self.classes_.take(_vote(self._ovo_decision(X, gram), len(self.classes_)))

    @available_if(lambda self: self._check_proba())
    def predict_proba(self, X):
        """Probabilities of shape (n_samples, n_classes), as SVC with probability=True: libsvm's pairwise Platt
        probabilities of the decision values, coupled (Wu, Lin & Weng 2004, libsvm's method 2)."""
        if self._by_libsvm():
            return super().predict_proba(X)
        if self._probA.size == 0 or self._probB.size == 0:
            raise ValueError("predict_proba is not available when fitted with probability=False")
        return _couple(_pairwise_probabilities(self._ovo_decision(X), self._probA, self._probB), len(self.classes_))

    @available_if(lambda self: self._check_proba())
    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def _by_libsvm(self) -> bool:
        check_is_fitted(self)
        return self.solver_ == "libsvm"

    def _ovo_decision(self, X, gram=None):
        """libsvm's pairwise decision values (its signs), of shape (n_samples, n_classes * (n_classes - 1) / 2),
        computed a block of rows at a time against the support vectors (from `gram`, a Cross, where given)."""
        if scipy.sparse.issparse(X):
            X = X.toarray()
        X = validate_data(self, X, reset=False, dtype=np.float64, order="C")
        support = self.support_vectors_
        weights = _pair_weights(self._dual_coef_, self._n_support)  # (n_SV, n_pairs)
        support_norms = squared_norms(support)
        if gram is not None and not (
            gram.describes(X)
            and gram.shape[1] == self.shape_fit_[0]
            and np.allclose(gram.column_norms(self._support_rows), support_norms, rtol=1e-9, atol=0.0)
        ):
            raise ValueError(
                "gram does not pair X's rows with the rows this SVC was fitted on; pass Gram.against of the "
                "Gram of X's rows and of the fitted rows, or no gram"
            )
        row_norms = None if gram is None else gram.row_norms()
        columns = support_norms if gram is None else gram.column_norms(self._support_rows)  # the products' own
        out = np.empty((X.shape[0], weights.shape[1]))
        step = max(1, PREDICT_BLOCK_BYTES // (8 * max(len(support), 1)))
        flops = X.shape[0] * support.shape[0] * ((0 if gram else support.shape[1]) + weights.shape[1])
        with blas_threads_for(flops):
            for start in range(0, X.shape[0], step):
                rows = X[start : start + step]
                if gram is None:
                    K, norms = rows @ support.T, squared_norms(rows)
                else:
                    K, norms = gram.block(self._support_rows, start, start + step), row_norms[start : start + step]
                _kernel_in_place(K, norms, columns, self.kernel, self._gamma, self.degree, self.coef0)
                out[start : start + step] = K @ weights
        out += self._intercept_
        return out


def _kernel_in_place(K, norms_a, norms_b, kernel, gamma, degree, coef0, clip=True) -> None:
    """Inner products K (n_a, n_b) -> the kernel, in place, computed as libsvm does per entry: linear x.y; poly
    (gamma x.y + coef0)^degree by repeated squaring; sigmoid tanh(gamma x.y + coef0); rbf exp(-gamma
    ((|x|^2 + |y|^2) - 2 x.y)), the squared distance clipped at 0 where `clip` (prediction: libsvm sums squared
    differences there), a block of rows at a time."""
    if kernel == "linear":
        return
    if kernel == "rbf":
        step = max(1, PREDICT_BLOCK_BYTES // (8 * max(K.shape[1], 1)))
        for start in range(0, K.shape[0], step):
            part = K[start : start + step]
            part *= -2.0
            part += norms_a[start : start + step, None] + norms_b[None, :]
            if clip:
                np.maximum(part, 0.0, out=part)
            part *= -gamma
            np.exp(part, out=part)
        return
    K *= gamma
    K += coef0
    if kernel == "sigmoid":
        np.tanh(K, out=K)
        return
    base = K.copy()  # poly: libsvm's powi, ret *= tmp for each set bit of degree, tmp squared each time
    K.fill(1.0)
    times = int(degree)
    while times > 0:
        if times % 2 == 1:
            K *= base
        base *= base
        times //= 2


def _pair_weights(dual_coef, n_support) -> np.ndarray:
    """libsvm's one-vs-one coefficients as one matrix (n_SV, n_pairs): pair (i, j) takes class i's support vectors'
    coefficients from row j - 1 of dual_coef and class j's from row i, zero elsewhere; pairs in libsvm's order."""
    k = len(n_support)
    start = np.concatenate([[0], np.cumsum(n_support)])
    weights = np.zeros((int(start[-1]), k * (k - 1) // 2))
    p = 0
    for i in range(k):
        for j in range(i + 1, k):
            weights[start[i] : start[i + 1], p] = dual_coef[j - 1, start[i] : start[i + 1]]
            weights[start[j] : start[j + 1], p] = dual_coef[i, start[j] : start[j + 1]]
            p += 1
    return weights


def _vote(dec, k: int) -> np.ndarray:
    """libsvm's one-vs-one vote: pair (i, j) votes i where its decision value is > 0, else j; the class with the
    most votes, the first of equals. dec : (n, n_pairs) -> class indices (n,)."""
    votes = np.zeros((dec.shape[0], k), dtype=np.int64)
    p = 0
    for i in range(k):
        for j in range(i + 1, k):
            positive = dec[:, p] > 0
            votes[:, i] += positive
            votes[:, j] += ~positive
            p += 1
    return np.argmax(votes, axis=1)


def _pairwise_probabilities(dec, prob_a, prob_b) -> np.ndarray:
    """libsvm's sigmoid_predict of each pair's decision value, clipped to [MIN_PROBABILITY, 1 - MIN_PROBABILITY]."""
    f = dec * prob_a + prob_b
    with np.errstate(over="ignore"):
        negative = np.exp(-np.abs(f))
        p = np.where(f >= 0, negative / (1.0 + negative), 1.0 / (1.0 + np.exp(np.minimum(f, 0.0))))
    return np.clip(p, MIN_PROBABILITY, 1.0 - MIN_PROBABILITY)


def _couple(pairwise, k: int) -> np.ndarray:
    """libsvm's multiclass_probability (Wu, Lin & Weng 2004, method 2) for every row at once, each row stopping when
    libsvm's does: pairwise (n, n_pairs) -> probabilities (n, k). Sums run in libsvm's order."""
    n = pairwise.shape[0]
    r = np.zeros((n, k, k))
    p = 0
    for i in range(k):
        for j in range(i + 1, k):
            r[:, i, j], r[:, j, i] = pairwise[:, p], 1.0 - pairwise[:, p]
            p += 1
    Q = np.zeros((n, k, k))
    for t in range(k):
        for j in range(k):
            if j != t:
                Q[:, t, t] += r[:, j, t] * r[:, j, t]
        for j in range(t):
            Q[:, t, j] = Q[:, j, t]
        for j in range(t + 1, k):
            Q[:, t, j] = -r[:, j, t] * r[:, t, j]
    prob = np.full((n, k), 1.0 / k)
    running = np.ones(n, dtype=bool)
    eps = 0.005 / k
    for _ in range(max(100, k)):
        Qp = np.zeros((n, k))
        pQp = np.zeros(n)
        for t in range(k):
            for j in range(k):
                Qp[:, t] += Q[:, t, j] * prob[:, j]
            pQp += prob[:, t] * Qp[:, t]
        running &= np.abs(Qp - pQp[:, None]).max(axis=1) >= eps
        if not running.any():
            break
        rows = np.flatnonzero(running)
        P, Qr, Qpr, pQpr = prob[rows], Q[rows], Qp[rows], pQp[rows]
        for t in range(k):
            diff = (-Qpr[:, t] + pQpr) / Qr[:, t, t]
            P[:, t] += diff
            pQpr = (pQpr + diff * (diff * Qr[:, t, t] + 2 * Qpr[:, t])) / (1 + diff) / (1 + diff)
            for j in range(k):
                Qpr[:, j] = (Qpr[:, j] + diff * Qr[:, t, j]) / (1 + diff)
                P[:, j] /= 1 + diff
        prob[rows] = P
    return prob


__all__ = ["BLAS_KERNELS", "BlasSVC", "Gram"]
