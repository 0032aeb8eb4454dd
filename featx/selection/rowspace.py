"""Row space: an L2-penalized linear model on more features than rows, solved in the span of its train rows."""

from __future__ import annotations

import contextlib

import numpy as np

from featx.classifiers.gram import one_blas_thread


def row_space(X_train, X_eval):
    """Coordinates of both sets in an orthonormal basis of the span of the train rows.

    For a linear model with an L2 penalty, a weight component orthogonal to every train row changes no
    train prediction and only adds penalty, so the optimum lies in that span (the representer theorem):
    fitting on these n_train-wide coordinates gives the same decision function as on the n_features-wide
    originals, at a fraction of the cost per solver iteration. Built from the (n_train, n_train) Gram
    matrix, so the wide matrix is multiplied only twice.
    """
    X_train = np.asarray(X_train, dtype=np.float32)
    values, vectors = np.linalg.eigh((X_train @ X_train.T).astype(np.float64))
    keep = values > values.max() * 1e-9
    root = np.sqrt(values[keep])
    cross = (np.asarray(X_eval, dtype=np.float32) @ X_train.T).astype(np.float64)
    return vectors[:, keep] * root, cross @ (vectors[:, keep] / root)


def for_row_space(estimator):
    """`estimator`, set to solve on row_space coordinates the problem it would solve on the wide features.

    Row space is used where n_features > n_samples; there LinearSVC's dual="auto" picks the dual problem, whose
    Gram matrix the row-space coordinates keep exactly, but on the (n_samples, <= n_samples) coordinates "auto"
    would switch to the primal solver, which converges slowly on them and stops elsewhere. So "auto" becomes
    True here. Estimators without a dual parameter are returned unchanged."""
    if estimator.get_params().get("dual") == "auto":
        estimator.set_params(dual=True)
    return estimator


ROW_SPACE = ("logreg", "linear-svm")  # L2-penalized linear models: the solution lies in the span of the train rows


# row space only where it cuts the width by half or more: at 1,574 fold rows x 1,808 features (ELPV blocks) its
# eigendecomposition made a logistic regression fold 2.4x slower than the wide fit (measured when the wide fit
# started from the train solution, which compare's folds no longer do)
ROW_SPACE_RATIO = 2


def fold_threads(classifier: str):
    """Where a fold's fit of `classifier` runs its BLAS: an L2 linear model's (ROW_SPACE) on one thread wherever the
    fold runs (a joblib worker of compare's or tune's, `featx fit`'s own process, a Dask worker). Its solver stops
    within its tolerance at a point that round-off moves, and threaded LAPACK sums the row space's eigh in another
    order with another thread count, so one thread keeps a fold's numbers the same on every layout of the same
    machine (the joblib workers ran each fit on one core already). Any other classifier: as the caller set them."""
    return one_blas_thread() if classifier in ROW_SPACE else contextlib.nullcontext()
