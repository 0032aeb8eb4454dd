"""featx.classifiers.gram: the rows' inner products by blocks, and the Gram value fits share (subsets, pickling)."""

import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits

from featx.classifiers.gram import Gram, gram_matrix


@pytest.fixture(scope="module")
def X():
    return load_digits().data[:500] / 16.0


def test_the_gram_matrix_by_blocks_is_the_whole_product(X):
    G = gram_matrix(X, block=64)
    np.testing.assert_allclose(G, X @ X.T, rtol=1e-12, atol=1e-9)
    assert np.array_equal(G, G.T)  # mirrored, so exactly symmetric


def test_a_subset_is_the_block_of_the_one_matrix_and_the_matrix_is_computed_once(X):
    gram = Gram(X)
    rows = np.arange(3, 400, 7)
    part = gram.subset(rows)
    assert part.n_rows == len(rows) and gram._store._matrix is None  # nothing computed before it is needed
    np.testing.assert_allclose(part.block(), X[rows] @ X[rows].T, rtol=1e-12, atol=1e-9)
    computed = gram._store._matrix
    assert computed is not None and gram._store.X is None  # X released once the matrix holds what is needed
    inner = part.subset(np.arange(5))  # a subset of a subset: the first five of `rows`
    np.testing.assert_allclose(inner.norms(), (X[rows[:5]] ** 2).sum(axis=1), rtol=1e-12)
    assert gram._store._matrix is computed
    block = part.block()
    block[:] = 0  # the caller's copy: the shared matrix is unchanged
    assert part.block().any()


def test_describes_checks_rows_and_norms_and_survives_pickling(X):
    gram = Gram(X[:100]).compute()
    assert gram.describes(X[:100]) and gram.describes(X[:100].astype(np.float32), rtol=1e-6)
    assert not gram.describes(X[:99]) and not gram.describes(X[1:101]) and not gram.describes(X[:100, :10])
    assert not gram.describes(2 * X[:100])  # transformed differently
    copy = pickle.loads(pickle.dumps(gram.subset(np.arange(10, 20))))
    assert copy.describes(X[10:20]) and copy.n_rows == 10


def test_an_unbound_gram_takes_the_rows_of_its_first_fit(X):
    gram = Gram()
    assert not gram.bound
    with pytest.raises(ValueError, match="unbound"):
        gram.block()
    assert gram.bind(X[:50]).describes(X[:50]) and gram.bound
    assert gram.bind(X[50:100]) is gram and not gram.describes(X[50:100])  # bound once: later rows are checked


def test_parts_and_their_products_against_each_other(X):
    train, held = Gram([X[:300], X[300:].astype(np.float32)]).parts()
    assert (train.n_rows, held.n_rows) == (300, 200)
    np.testing.assert_allclose(train.block(), X[:300] @ X[:300].T, rtol=1e-12, atol=1e-9)
    cross = held.against(train)
    assert cross.shape == (200, 300) and cross.describes(X[300:]) and not cross.describes(X[:200])
    np.testing.assert_allclose(cross.block(), X[300:] @ X[:300].T, rtol=1e-6, atol=1e-5)  # float32 part
    np.testing.assert_allclose(cross.block([4, 2], 10, 20), (X[310:320] @ X[[4, 2]].T), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(cross.column_norms([4, 2]), (X[[4, 2]] ** 2).sum(axis=1), rtol=1e-12)
    labelled = Gram(X[100:], labels=np.arange(100, 500))
    np.testing.assert_allclose(labelled.at([101, 499]).norms(), (X[[101, 499]] ** 2).sum(axis=1), rtol=1e-12)
    with pytest.raises(ValueError, match="not in this Gram"):
        labelled.at([5])
    with pytest.raises(ValueError, match="one Gram"):
        train.against(Gram(X[:300]))
