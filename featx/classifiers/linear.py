"""A linear SVM solved to its optimum: LinearSVC's own objective, minimized by a direct generalized Newton method.

scikit-learn's `LinearSVC` minimizes, per one-vs-rest class, the L2-regularized squared hinge loss

    0.5 * ||w||^2 + sum_i c_i * max(0, 1 - s_i * w . x_i)^2

(x_i with a constant `intercept_scaling` column when fit_intercept, whose weight is regularized too) with
liblinear's trust-region Newton or dual coordinate-descent solver. On standardized CNN features those stop at
`max_iter` long before the optimum: on ELPV's 1,575 x 1,280 `top_activation` rows the primal solver ran 1,000
iterations in 46 s and ended 1.8% above the optimum. The objective is piecewise quadratic, so a Newton step on
the current active set (rows with margin < 1) is exact on that set; with an exact line search the active set
settles within a few dozen steps (Keerthi & DeCoste 2005; Mangasarian 2002). Each step solves its system
I + 2 X_A^T C_A X_A exactly (Cholesky), in the smaller of two spaces:

* primal, (n_features + 1)^2, when at least as many rows are active: the Hessian is kept and updated by the
  rows entering and leaving the active set (every class's first step, all rows active, shares one factor);
* Woodbury, |A|^2, when fewer rows are active than there are columns: the active rows' block of the rows'
  Gram matrix (computed once for all classes).

`ExactLinearSVC` is `LinearSVC` with one more keyword, `solver`; the default ("auto") takes this method wherever
it applies (l2 penalty, squared hinge, one-vs-rest, dense X, a system of side at most NEWTON_MAX_SIZE) and
liblinear otherwise, so every LinearSVC parameter keeps its meaning and a fitted model has LinearSVC's
attributes (coef_, intercept_, classes_, n_iter_).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, validate_data

from featx.classifiers.gram import gram_matrix

NEWTON_MAX_SIZE = 16_384  # the largest system's side (rows or columns, whichever is fewer): its (side, side)
# float64 matrices (Hessian, its factor, a working copy) stay near 6 GB; beyond it "auto" takes liblinear
ROUNDING = 1e-12  # a gradient this small relative to the first is the optimum up to rounding
GRAM_MAX_ROWS = 25_000  # the rows' Gram matrix is kept up to this many rows (25,000^2 float64: 5 GB)


class ExactLinearSVC(LinearSVC):
    """LinearSVC whose default solver reaches the optimum of LinearSVC's objective (see the module docstring).

    Parameters
    ----------
    solver : {"auto", "newton", "liblinear"}, default "auto"
        "newton": the direct generalized Newton method (l2 penalty, squared hinge, ovr; sparse X is densified).
        "liblinear": scikit-learn's LinearSVC fit, unchanged (then `dual` applies). "auto": "newton" where it
        applies and min(n_samples, n_features + 1) <= NEWTON_MAX_SIZE, else "liblinear".
    penalty, loss, dual, tol, C, multi_class, fit_intercept, intercept_scaling, class_weight, verbose,
    random_state, max_iter : as LinearSVC. "newton" runs to the optimum: it stops when a full step leaves the
    active set unchanged (the step then lands on the exact minimizer) or the gradient is rounding noise;
    `max_iter` caps its steps per class; `tol`, `dual`, `verbose` and `random_state` (the method is
    deterministic) are liblinear's only.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features).
    intercept_ : ndarray of shape (1,) or (n_classes,); 0.0 without fit_intercept.
    classes_ : ndarray of shape (n_classes,). n_iter_ : int, the most steps any class took.
    solver_ : str, the solver that fitted ("newton" or "liblinear").
    """

    _parameter_constraints = {
        **LinearSVC._parameter_constraints,
        "solver": [StrOptions({"auto", "newton", "liblinear"})],
    }

    def __init__(
        self,
        penalty="l2",
        loss="squared_hinge",
        *,
        solver="auto",
        dual="auto",
        tol=1e-4,
        C=1.0,
        multi_class="ovr",
        fit_intercept=True,
        intercept_scaling=1,
        class_weight=None,
        verbose=0,
        random_state=None,
        max_iter=1000,
    ):
        super().__init__(
            penalty=penalty,
            loss=loss,
            dual=dual,
            tol=tol,
            C=C,
            multi_class=multi_class,
            fit_intercept=fit_intercept,
            intercept_scaling=intercept_scaling,
            class_weight=class_weight,
            verbose=verbose,
            random_state=random_state,
            max_iter=max_iter,
        )
        self.solver = solver

    def fit(self, X, y, sample_weight=None):
        """X : array of shape (n_samples, n_features); y : (n_samples,); sample_weight : (n_samples,) or None."""
        self._validate_params()
        applies = self.penalty == "l2" and self.loss == "squared_hinge" and self.multi_class == "ovr"
        if self.solver == "newton" and not applies:
            raise ValueError(
                "solver='newton' solves penalty='l2', loss='squared_hinge', multi_class='ovr' only; "
                f"got penalty={self.penalty!r}, loss={self.loss!r}, multi_class={self.multi_class!r} "
                "(use solver='liblinear')"
            )
        if self.solver == "liblinear" or not applies or (self.solver == "auto" and scipy.sparse.issparse(X)):
            return self._fit_liblinear(X, y, sample_weight)
        if scipy.sparse.issparse(X):  # solver="newton" asked for: it works on dense rows
            X = X.toarray()
        X, y = validate_data(self, X, y, dtype=np.float64, order="C")
        if self.solver == "auto" and min(X.shape[0], X.shape[1] + self.fit_intercept) > NEWTON_MAX_SIZE:
            return self._fit_liblinear(X, y, sample_weight)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the data, but the data contains only one "
                f"class: {self.classes_[0]!r}"
            )
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        class_weight = compute_class_weight(self.class_weight, classes=self.classes_, y=y, sample_weight=weights)
        index = np.searchsorted(self.classes_, y)
        if self.fit_intercept:
            X = np.hstack([X, np.full((X.shape[0], 1), float(self.intercept_scaling))])
        problem = _Problem(X)
        W, steps = [], []
        # liblinear's costs: binary, each row C * weight of its class (positive: classes_[1]); one-vs-rest,
        # a class's rows C * its weight, every other row C.
        if len(self.classes_) == 2:
            problems = [(index == 1, self.C * class_weight[index] * weights)]
        else:
            problems = [
                (index == k, self.C * weights * np.where(index == k, class_weight[k], 1.0))
                for k in range(len(self.classes_))
            ]
        for positive, cost in problems:
            w, n_steps = problem.solve(np.where(positive, 1.0, -1.0), cost, self.max_iter)
            W.append(w)
            steps.append(n_steps)
        W = np.asarray(W)
        self.n_iter_ = int(max(steps))
        if self.n_iter_ >= self.max_iter:
            warnings.warn(
                f"the Newton solver stopped at max_iter={self.max_iter} before converging; increase max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        if self.fit_intercept:
            self.coef_, self.intercept_ = W[:, :-1].copy(), W[:, -1] * self.intercept_scaling
        else:
            self.coef_, self.intercept_ = W, 0.0
        self.solver_ = "newton"
        return self

    def _fit_liblinear(self, X, y, sample_weight):
        super().fit(X, y, sample_weight=sample_weight)
        self.solver_ = "liblinear"
        return self


class _Problem:
    """The rows X (n, p), augmented; solves one binary squared-hinge SVM on them per call.

    Each Newton step solves (I + 2 X_A^T C_A X_A) d = -g exactly, in the smaller space: by Woodbury on the
    active rows' Gram block, diag(1 / (2 c_A)) + X_A X_A^T, when there are fewer active rows than columns; else
    with the (p, p) Hessian, kept up to date by the rows entering and leaving. Shared across the classes of a
    one-vs-rest fit: the Gram matrix X X^T (computed on first use, when it fits in GRAM_MAX_ROWS rows), and the
    all-rows-active Hessian for the last cost vector (one-vs-rest classes without class weights share it).
    """

    def __init__(self, X):
        self.X = X
        self._gram = None
        self._start = None  # (cost, Hessian with every row of positive cost active)

    def solve(self, s, cost, max_iter):
        """w of shape (p,) minimizing 0.5 ||w||^2 + sum_i cost_i max(0, 1 - s_i w.x_i)^2; and the steps taken.

        s : (n,) of +-1; cost : (n,) >= 0.
        """
        X = self.X
        p = X.shape[1]
        w = np.zeros(p)
        margin = np.zeros(X.shape[0])  # s_i * w.x_i
        active = cost > 0
        hessian = None  # (H, the active rows it holds, whether H is this solve's own) once the primal path is taken
        g0 = None
        for step in range(max_iter):
            residual = np.where(active, cost * (1.0 - margin), 0.0)  # c_i * (1 - s_i w.x_i) on the active rows
            g = w - 2.0 * X.T @ (s * residual)
            g_norm = np.linalg.norm(g)
            g0 = g_norm if g0 is None else g0
            if g_norm <= ROUNDING * g0:
                return w, step
            A = np.flatnonzero(active)
            if len(A) < p:
                M = self._gram_block(A)
                M[np.diag_indices_from(M)] += 0.5 / cost[A]
                d = X[A].T @ _cholesky_solve(M, X[A] @ g) - g
            elif hessian is None and np.array_equal(active, cost > 0):  # the start: every class's first step
                start, factor = self._start_for(cost)
                d = -scipy.linalg.cho_solve(factor, g, check_finite=False)
                hessian = (start, active, False)  # not this class's own copy: copied before it is updated
            else:
                hessian = self._hessian_for(hessian, active, cost)
                d = -_cholesky_solve(hessian[0].copy(), g)
            q = s * (X @ d)
            t = _line_search(w @ d, d @ d, margin, q, cost)
            w += t * d
            margin += t * q
            now = (margin < 1.0) & (cost > 0)
            if t == 1.0 and np.array_equal(now, active):
                return w, step + 1  # a full step on an unchanged active set lands on the exact minimizer
            active = now
        return w, max_iter

    def _gram_block(self, A):
        """X_A X_A^T, of shape (|A|, |A|): from the whole Gram matrix where it fits, else computed."""
        if self._gram is None and self.X.shape[0] <= GRAM_MAX_ROWS:
            self._gram = gram_matrix(self.X)
        if self._gram is not None:
            return self._gram[np.ix_(A, A)]
        rows = self.X[A]
        return rows @ rows.T

    def _start_for(self, cost):
        """The all-rows-active Hessian for `cost` and its Cholesky factor, computed once for equal costs."""
        if self._start is None or not np.array_equal(self._start[0], cost):
            H = _hessian(self.X, cost)
            self._start = (cost.copy(), H, scipy.linalg.cho_factor(H, lower=True, check_finite=False))
        return self._start[1], self._start[2]

    def _hessian_for(self, hessian, active, cost):
        """(I + 2 X_A^T C_A X_A, active, True): `hessian` updated by the rows that changed, or built anew."""
        if hessian is None or (hessian[1] != active).sum() > active.sum():
            return _hessian(self.X, np.where(active, cost, 0.0)), active, True
        H, held, own = hessian
        H = H if own else H.copy()
        entering, leaving = active & ~held, held & ~active
        _add_rows(H, self.X[entering], cost[entering])
        _add_rows(H, self.X[leaving], -cost[leaving])
        return H, active, True


def _cholesky_solve(M, b):
    """M^-1 b for symmetric positive definite M (overwritten)."""
    factor = scipy.linalg.cho_factor(M, lower=True, overwrite_a=True, check_finite=False)
    return scipy.linalg.cho_solve(factor, b, check_finite=False)


def _hessian(X, cost):
    """I + 2 X^T diag(cost) X, of shape (p, p) (cost >= 0; as Y^T Y, which BLAS computes as one half)."""
    keep = np.flatnonzero(cost > 0)
    Y = X[keep] * np.sqrt(2.0 * cost[keep])[:, None]
    H = Y.T @ Y
    H[np.diag_indices_from(H)] += 1.0
    return H


def _add_rows(H, rows, cost):
    if len(rows):
        H += (rows.T * (2.0 * cost)) @ rows


def _line_search(wd, dd, margin, q, cost):
    """The exact minimizer t of f(w + t d) along d: Newton's method on the piecewise-linear, increasing f'(t).

    wd = w.d, dd = d.d; margin_i = s_i w.x_i, q_i = s_i d.x_i. Starts at the full step t = 1.
    """
    t = 1.0
    for _ in range(100):
        slack = 1.0 - margin - t * q
        on = (slack > 0) & (cost > 0)
        slope = wd + t * dd - 2.0 * np.sum(cost[on] * slack[on] * q[on])
        curvature = dd + 2.0 * np.sum(cost[on] * q[on] ** 2)
        if curvature <= 0:
            return t
        step = slope / curvature
        t -= step
        if abs(step) <= 1e-12 * max(1.0, abs(t)):
            break
    return max(t, 0.0)
