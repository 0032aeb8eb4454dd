"""Inner products of feature rows by BLAS: computed once, shared by every fit on those rows.

Every kernel an exact kernel SVM offers here (linear, poly, rbf, sigmoid) is an elementwise function of the rows'
inner products X X^T (rbf through the squared distances ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j, whose norms are the
diagonal). One matrix product computes all of them at BLAS speed, where libsvm evaluates each entry in a scalar
loop; and one such matrix serves every gamma, C, degree and coef0 fitted on the same rows, and every fold whose rows
are some of them. `Gram` is that matrix as a value a caller hands to the fits (featx.classifiers.svm.BlasSVC takes it
as `fit(..., gram=)`); `gram_matrix` is the product itself, by blocks.

Memory: the matrix is n^2 float64 values (20,000 rows: 3.2 GB), computed on first use, then held until the Gram is
dropped; a fit that takes a block of it makes one more matrix of the block's size (the kernel). Callers build such
matrices themselves up to KERNEL_MAX_BYTES (max_kernel_rows()).
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from functools import cache

import numpy as np
from threadpoolctl import ThreadpoolController

BLOCK_ROWS = 4096  # rows per product in gram_matrix: bounds the temporaries, and avoids OpenBLAS's SIGSEGV below
SMALL_PRODUCT_FLOPS = 2e9  # products below this run on one BLAS thread (blas_threads_for)
KERNEL_MAX_BYTES = 4 * 10**9  # the largest (n, n) float64 matrix featx builds by itself: 22,360 rows (20,000: 3.2 GB)


def max_kernel_rows() -> int:
    """The most rows whose (n, n) float64 matrix fits KERNEL_MAX_BYTES (the exact SVM's kernel, a shared Gram)."""
    return math.isqrt(KERNEL_MAX_BYTES // 8)


@contextmanager
def blas_threads_for(flops: float):
    """Run a product of `flops` on one BLAS thread when it is small (below SMALL_PRODUCT_FLOPS: milliseconds on one
    core), on all of BLAS's threads otherwise. Starting and syncing threads costs more than a small product saves,
    and on a busy machine (test workers, other jobs) far more: 166 x 3,088 rows times their transpose took 0.23 s
    on OpenBLAS's two threads and 2 ms on one (the 2-core VM at load 15, 2026-12-06)."""
    if flops < SMALL_PRODUCT_FLOPS:
        with one_blas_thread():
            yield
    else:
        yield


def one_blas_thread():
    """A context in which BLAS and LAPACK run on one thread: their sums then follow one order whatever the machine's
    core count or the caller's worker layout (OpenBLAS's threaded eigh sums in another order on 1 and 2 threads)."""
    return _controller().limit(limits=1, user_api="blas")


@cache
def _controller() -> ThreadpoolController:
    """The process's thread pools, found once (finding them reads the loaded libraries: milliseconds per call)."""
    return ThreadpoolController()


def gram_matrix(X, block: int = BLOCK_ROWS) -> np.ndarray:
    """X X^T, of shape (n, n), by blocks of rows: one X @ X.T of 20,000 x 12,417 crashed OpenBLAS (SIGSEGV in its
    symmetric product); each block of the upper triangle is mirrored into the lower one, so the result is exactly
    symmetric. X : ndarray of shape (n, d)."""
    n = X.shape[0]
    G = np.empty((n, n), dtype=np.result_type(X.dtype, np.float32))
    with blas_threads_for(n * n * X.shape[1]):
        for start in range(0, n, block):
            rows = X[start : start + block]
            G[start : start + block, start:] = rows @ X[start:].T
            G[start:, start : start + block] = G[start : start + block, start:].T
    return G


def squared_norms(X) -> np.ndarray:
    """||x_i||^2 of each row of X (n, d), shape (n,)."""
    return np.einsum("ij,ij->i", X, X)


class Gram:
    """The inner products of the rows of X, computed by BLAS on first use and shared by every fit handed this value.

    Parameters
    ----------
    X : array of shape (n, d), or a list of such arrays (parts, whose rows are stacked in order: a split's train rows
        and its held-out rows); referenced (not copied) until the matrix is computed, in float64, then released.
        None: unbound, the Gram of whatever rows the first fit handed it binds it to (`bind`): a caller that fits
        several estimators on rows it never sees itself (a Pipeline's transformed rows) hands them all one unbound
        Gram, and the later fits check that their rows are the first's (`describes`).
    labels : array of shape (n,), sorted, or None: numbers of X's rows (their rows in a larger matrix, e.g. every
        row of a cache entry), by which `at(labels)` picks a subset (a fold's train rows by their row numbers).

    `subset(rows)` is the Gram of X[rows]: the same matrix, computed once for the whole and every subset (a fold's
    train rows are a subset of the rows of all folds); `parts()` the Gram of each part. `block()` gives a subset's
    (m, m) block as a new array, which the caller may overwrite (a kernel is made from it in place); `norms()` its
    squared row norms (the diagonal). `against(other)` is the inner products of this Gram's rows with another subset's
    (held-out rows against train rows: what a prediction needs), again from the same matrix. Pickled (to a joblib
    worker), a Gram carries its matrix once computed, else X.
    """

    def __init__(self, X=None, labels=None):
        self._store = None if X is None else _Store(X)
        self._rows = None
        self._labels = None if labels is None else np.asarray(labels)
        if self._labels is not None and (X is None or len(self._labels) != self._store.n):
            raise ValueError("labels name the rows of X: give X and one label per row")

    def at(self, labels) -> Gram:
        """The Gram of the rows labelled `labels`, for a Gram made with labels; any other Gram is returned as it is
        (unbound, it is bound to the rows of the fit it is handed; bound, the fit checks that they are its rows)."""
        if self._labels is None:
            return self
        labels = np.asarray(labels)
        positions = np.minimum(np.searchsorted(self._labels, labels), len(self._labels) - 1)
        if not np.array_equal(self._labels[positions], labels):
            raise ValueError("at(): some of these rows are not in this Gram")
        return self.subset(positions)

    @property
    def bound(self) -> bool:
        return self._store is not None

    def bind(self, X) -> Gram:
        """Make an unbound Gram the Gram of X (an array or a list of parts, as the constructor's); a bound one is left
        as it is. Returns self."""
        if self._store is None:
            self._store = _Store(X)
        return self

    @property
    def n_rows(self) -> int:
        self._check_bound()
        return self._store.n if self._rows is None else len(self._rows)

    def subset(self, rows) -> Gram:
        """The Gram of X[rows] (rows : integer indices into this Gram's rows, or a boolean mask), sharing the matrix."""
        self._check_bound()
        rows = np.arange(self.n_rows)[rows]
        view = object.__new__(Gram)
        view._store, view._labels = self._store, None
        view._rows = rows if self._rows is None else self._rows[rows]
        return view

    def parts(self) -> list[Gram]:
        """The Gram of each part of a Gram made from a list of arrays, in order."""
        self._check_bound()
        if self._rows is not None:
            raise ValueError("parts() splits a whole Gram made from parts, not a subset")
        bounds = np.cumsum([0, *self._store.part_rows])
        return [self.subset(np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def against(self, other: Gram) -> Cross:
        """The inner products of this Gram's rows (as rows) with `other`'s (as columns): both from the same matrix."""
        self._check_bound()
        if other._store is not self._store:
            raise ValueError("against() pairs two subsets of one Gram")
        return Cross(self._store, self._positions(), other._positions())

    def compute(self) -> Gram:
        """Compute the matrix now (for the whole of X), e.g. before handing the Gram to parallel workers."""
        self._check_bound()
        self._store.matrix()
        return self

    def block(self) -> np.ndarray:
        """This Gram's rows' inner products, of shape (n_rows, n_rows), as a new float64 array."""
        self._check_bound()
        G = self._store.matrix()
        if self._rows is None:
            return G.copy()
        first = self._rows[0] if len(self._rows) else 0
        if np.array_equal(self._rows, np.arange(first, first + len(self._rows))):  # a part: a slice, copied fast
            return G[first : first + len(self._rows), first : first + len(self._rows)].copy()
        return G[np.ix_(self._rows, self._rows)]

    def norms(self) -> np.ndarray:
        """The squared norms of this Gram's rows, shape (n_rows,): the diagonal."""
        self._check_bound()
        return self._store.norms()[self._positions()]

    def _positions(self) -> np.ndarray:
        return np.arange(self._store.n) if self._rows is None else self._rows

    def _check_bound(self) -> None:
        if self._store is None:
            raise ValueError("this Gram is unbound: bind(X) it to the rows it is the Gram of first")

    def describes(self, X, rtol: float = 1e-9) -> bool:
        """Whether this could be the Gram of X: as many rows, and each row's squared norm equal to the diagonal's up
        to `rtol` (the two are summed in different orders: the difference is d * float64 epsilon, relative). O(n d):
        a cheap check that a caller handed the Gram of the rows it fits, after the same transforms."""
        self._check_bound()
        return _same_rows(X, self.norms(), self._store.n_features, rtol)


class Cross:
    """Inner products of some rows of a Gram's matrix (rows) with others (columns): Gram.against's value.

    `block(columns, start, stop)` : the (stop - start, len(columns)) block of rows start..stop against the columns
    picked (positions among this Cross's columns), as a new float64 array; `row_norms()`, `column_norms()` : the
    rows' and columns' squared norms; `describes(X)` : whether X's rows could be the rows (norms, as Gram.describes).
    """

    def __init__(self, store: _Store, rows: np.ndarray, columns: np.ndarray):
        self._store, self._rows, self._columns = store, rows, columns

    @property
    def shape(self) -> tuple[int, int]:
        return len(self._rows), len(self._columns)

    def block(self, columns=None, start: int = 0, stop: int | None = None) -> np.ndarray:
        picked = self._columns if columns is None else self._columns[columns]
        return self._store.matrix()[np.ix_(self._rows[start:stop], picked)]

    def row_norms(self) -> np.ndarray:
        return self._store.norms()[self._rows]

    def column_norms(self, columns=None) -> np.ndarray:
        return self._store.norms()[self._columns if columns is None else self._columns[columns]]

    def describes(self, X, rtol: float = 1e-9) -> bool:
        return _same_rows(X, self.row_norms(), self._store.n_features, rtol)


def _same_rows(X, norms, n_features: int, rtol: float) -> bool:
    """Whether X (n, d) has len(norms) rows of n_features, their squared norms equal to `norms` up to rtol."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] != len(norms) or X.shape[1] != n_features:
        return False
    return bool(np.allclose(squared_norms(X.astype(np.float64, copy=False)), norms, rtol=rtol, atol=0.0))


class _Store:
    """X (or its parts), and X X^T once computed (then X is released: the diagonal holds what describes() checks)."""

    def __init__(self, X):
        parts = list(X) if isinstance(X, (list, tuple)) else [X]
        self.X, self.part_rows = parts, [part.shape[0] for part in parts]
        self.n, self.n_features = sum(self.part_rows), parts[0].shape[1]
        if any(part.shape[1] != self.n_features for part in parts):
            raise ValueError("the parts of a Gram must have the same number of columns")
        self._matrix = self._norms = None

    def matrix(self) -> np.ndarray:
        if self._matrix is None:
            parts = [np.asarray(part, dtype=np.float64) for part in self.X]
            self._matrix = gram_matrix(np.ascontiguousarray(parts[0] if len(parts) == 1 else np.vstack(parts)))
            self._norms = np.diagonal(self._matrix).copy()
            self.X = None
        return self._matrix

    def norms(self) -> np.ndarray:
        self.matrix()
        return self._norms


def takes_gram(estimator, n_rows: int | None = None) -> bool:
    """Whether `estimator`'s fit takes a `gram` (a Gram of the rows it fits) and would use it on n_rows rows (its
    `uses_gram(n_rows)` says, where it has one: featx.classifiers.svm.BlasSVC), so that fits on the same rows can
    share one: a caller fitting a grid of parameters (tune, compare) hands every fit the same Gram."""
    if "gram" not in inspect.signature(estimator.fit).parameters:
        return False
    uses = getattr(estimator, "uses_gram", None)
    return uses is None or bool(uses(n_rows))
