"""A linear SVM solved to its optimum: LinearSVC's own objective, minimized by a direct generalized Newton method.

scikit-learn's `LinearSVC` minimizes, per one-vs-rest class, the L2-regularized squared hinge loss

    0.5 * ||w||^2 + sum_i c_i * max(0, 1 - s_i * w . x_i)^2

(x_i with a constant `intercept_scaling` column when fit_intercept, whose weight is regularized too) with
liblinear's trust-region Newton or dual coordinate-descent solver. On standardized CNN features those stop at
`max_iter` long before the optimum: on ELPV's 1,575 x 1,280 `top_activation` rows the primal solver ran 1,000
iterations in 46 s and ended 1.8% above the optimum. The objective is piecewise quadratic, so a Newton step on
the current active set (rows with margin < 1) is exact on that set; with an exact line search the active set
settles within a few dozen steps (Keerthi & DeCoste 2005; Mangasarian 2002). Each step solves the smaller of
two systems exactly (Cholesky):

* primal, (n_features + 1)^2, when there are at least as many rows: the Hessian I + 2 X_A^T C_A X_A is kept
  and updated by the rows entering and leaving the active set;
* dual (Woodbury), |A|^2, when features outnumber rows: w stays in the rows' span, through their Gram matrix.

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

NEWTON_MAX_SIZE = 6000  # the direct system's side: beyond it (both rows and features), liblinear
ROUNDING = 1e-12  # a gradient this small relative to the first is the optimum up to rounding


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
            w, n_steps = problem.solve(np.where(positive, 1.0, -1.0), cost, self.tol, self.max_iter)
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
    """The rows X (n, p), augmented; solves one binary squared-hinge SVM on them per call, in the smaller space.

    Shared across the classes of a one-vs-rest fit: the Gram matrix X X^T (when p > n), or the Hessian of the
    all-rows-active start I + 2 X^T diag(c) X for the last cost vector c (when p <= n; one-vs-rest classes
    without class weights share it, so it is computed once).
    """

    def __init__(self, X):
        self.X = X
        self.dual = X.shape[1] > X.shape[0]
        self.gram = X @ X.T if self.dual else None
        self._start = None  # (cost, Hessian at w = 0) of the primal path

    def solve(self, s, cost, tol, max_iter):
        """w of shape (p,) minimizing 0.5 ||w||^2 + sum_i cost_i max(0, 1 - s_i w.x_i)^2; and the steps taken.

        s : (n,) of +-1; cost : (n,) >= 0.
        """
        return (self._solve_dual if self.dual else self._solve_primal)(s, cost, max_iter)

    def _solve_primal(self, s, cost, max_iter):
        X = self.X
        p = X.shape[1]
        w = np.zeros(p)
        margin = X @ w  # s_i * w.x_i
        active = cost > 0
        H = self._start_hessian(cost)
        g0 = None
        for step in range(max_iter):
            residual = np.where(active, cost * (1.0 - margin), 0.0)  # c_i * (1 - s_i w.x_i) on the active rows
            g = w - 2.0 * X.T @ (s * residual)
            g_norm = np.linalg.norm(g)
            g0 = g_norm if g0 is None else g0
            if g_norm <= ROUNDING * g0:
                return w, step
            d = -scipy.linalg.cho_solve(scipy.linalg.cho_factor(H, lower=True, check_finite=False), g)
            q = s * (X @ d)
            t = _line_search(w @ d, d @ d, margin, q, cost)
            w += t * d
            margin += t * q
            now = (margin < 1.0) & (cost > 0)
            entering, leaving = now & ~active, active & ~now
            if t == 1.0 and not entering.any() and not leaving.any():
                return w, step + 1  # a full step on an unchanged active set lands on the exact minimizer
            if entering.sum() + leaving.sum() > now.sum():
                H = _hessian(X, np.where(now, cost, 0.0))
            else:
                _add_rows(H, X[entering], cost[entering])
                _add_rows(H, X[leaving], -cost[leaving])
            active = now
        return w, max_iter

    def _start_hessian(self, cost):
        if self._start is None or not np.array_equal(self._start[0], cost):
            self._start = (cost.copy(), _hessian(self.X, cost))
        return self._start[1].copy()

    def _solve_dual(self, s, cost, max_iter):
        """w = X^T beta throughout; Newton's system by Woodbury on the active rows' Gram block."""
        G = self.gram
        beta = np.zeros(len(s))
        margin = np.zeros(len(s))  # s_i * w.x_i = s_i * (G beta)_i
        g0, t, previous = None, 0.0, None
        for step in range(max_iter):
            active = (margin < 1.0) & (cost > 0)
            residual = np.where(active, cost * (1.0 - margin), 0.0)
            gamma = beta - 2.0 * s * residual  # g = X^T gamma
            Gg = G @ gamma
            g_norm = np.sqrt(max(gamma @ Gg, 0.0))
            g0 = g_norm if g0 is None else g0
            if g_norm <= ROUNDING * g0 or (step and t == 1.0 and np.array_equal(active, previous)):
                return self.X.T @ beta, step
            previous = active
            # H^-1 X^T gamma = X^T (gamma - E_A M^-1 (G gamma)_A), M = diag(1 / (2 c_A)) + G_AA
            A = np.flatnonzero(active)
            delta = -gamma.copy()
            if len(A):
                M = G[np.ix_(A, A)] + np.diag(0.5 / cost[A])
                delta[A] += scipy.linalg.cho_solve(scipy.linalg.cho_factor(M, lower=True, check_finite=False), Gg[A])
            Gd = G @ delta
            q = s * Gd
            t = _line_search(beta @ Gd, delta @ Gd, margin, q, cost)
            beta += t * delta
            margin += t * q
        return self.X.T @ beta, max_iter


def _hessian(X, cost):
    """I + 2 X^T diag(cost) X, of shape (p, p)."""
    H = (X.T * (2.0 * cost)) @ X
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
