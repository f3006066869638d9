"""Blocked top-k products equal the whole product's top k, and no block outgrows its budget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from shopsense.features.interactions import as_history
from shopsense.models.base import RecQuery
from shopsense.models.itemknn import ItemKNN, ItemKNNConfig
from shopsense.models.neighbours import _row_blocks, keep_top, neighbour_similarity, top_k_product


def _interest(seed: int, users: int = 300, items: int = 120, density: float = 0.05) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    matrix = sp.random(users, items, density=density, format="csr", random_state=rng, dtype=np.float64)
    matrix.data = np.ceil(matrix.data * 4)  # small integer weights: many exact ties at the cut
    return matrix


def _whole(x: sp.csr_matrix, k: int, shrinkage: float) -> sp.csr_matrix:
    """The unblocked reference: the full product, no self, shrunk cosine, top k."""
    sq = np.asarray(x.multiply(x).sum(axis=1)).ravel()
    co = (x @ x.T).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    co.sort_indices()
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
    denom = np.sqrt(sq[rows]) * np.sqrt(sq[co.indices]) + shrinkage
    return keep_top(sp.csr_matrix((co.data / denom, co.indices, co.indptr), shape=co.shape), k)


def _same(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    a, b = a.tocsr(), b.tocsr()
    a.sort_indices()
    b.sort_indices()
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)  # exact: each row's sums run in the same order


@pytest.mark.parametrize("budget", [1, 50, 2_000, 10**9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocked_similarity_equals_whole_product(seed: int, budget: int) -> None:
    items = _interest(seed).T.tocsr()
    expected = _whole(items, 7, 3.0)
    x = items.astype(np.float64)
    sq = np.asarray(x.multiply(x).sum(axis=1)).ravel()

    def shrunk(rows: np.ndarray, cols: np.ndarray, co: np.ndarray) -> np.ndarray:
        out: np.ndarray = co / (np.power(sq[rows], 0.5) * np.power(sq[cols], 0.5) + 3.0)
        return out

    got = top_k_product(x, x.T.tocsr(), 7, shrunk, skip_diagonal=True, budget=budget)
    _same(got, expected)
    _same(neighbour_similarity(items, 7, 3.0), expected)


def test_blocks_respect_the_budget_and_cover_every_row() -> None:
    x = _interest(4, users=400, items=200, density=0.08).T.tocsr()
    right = x.T.tocsr()
    bounds = _row_blocks(x, right, 500)
    assert bounds[0] == 0 and bounds[-1] == x.shape[0]
    assert np.all(np.diff(bounds) >= 1)
    assert len(bounds) > 3  # the budget really splits this product
    for start, stop in itertools.pairwise(bounds):
        entries = (x[start:stop] @ right).nnz
        assert entries <= 500 or stop - start == 1


def test_no_entry_on_the_diagonal_and_at_most_k_per_row() -> None:
    x = _interest(5).T.tocsr()
    got = top_k_product(x, x.T.tocsr(), 4, skip_diagonal=True, budget=30)
    rows = np.repeat(np.arange(got.shape[0]), np.diff(got.indptr))
    assert not np.any(got.indices == rows)
    assert np.diff(got.indptr).max() <= 4
    assert got.nnz > 0


def test_empty_product_keeps_its_shape() -> None:
    empty = sp.csr_matrix((5, 8))
    got = top_k_product(empty, sp.csr_matrix((8, 3)), 2)
    assert got.shape == (5, 3) and got.nnz == 0


def test_recommend_in_blocks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scores are dense users x items, so ``recommend`` takes many users a block at a time."""
    matrix = _interest(6, users=250, items=90, density=0.08)
    model = ItemKNN(ItemKNNConfig(neighbours=20)).fit(as_history(matrix))
    ranked = model.recommend(RecQuery(as_history(matrix), 10, exclude=matrix))
    whole_items, whole_scores = ranked.items, ranked.scores
    monkeypatch.setattr("shopsense.models.base.SCORED_CELLS", 90 * 7)  # 7 users per block
    ranked = model.recommend(RecQuery(as_history(matrix), 10, exclude=matrix))
    items, scores = ranked.items, ranked.scores
    np.testing.assert_array_equal(items, whole_items)
    np.testing.assert_array_equal(scores, whole_scores)
    assert not np.any((matrix[np.arange(250)[:, None], np.maximum(items, 0)].toarray() > 0) & (items >= 0))
