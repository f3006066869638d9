"""Known-answer tests: every metric against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from shopsense.eval import metrics as m

REC = np.array([[3, 1, 7, 2], [0, -1, -1, -1]])
TRUTH = sp.csr_matrix((np.ones(4), ([0, 0, 0, 1], [1, 2, 5, 0])), shape=(2, 10))


def _close(values: np.ndarray, expected: list[float]) -> None:
    assert values == pytest.approx(expected, abs=1e-5)


def test_accuracy_at_4_by_hand() -> None:
    # user 0: hits at ranks 2 and 4 out of 3 relevant; user 1: its only relevant item at rank 1
    _close(m.hit_rate(REC, TRUTH, 4), [1, 1])
    _close(m.precision(REC, TRUTH, 4), [0.5, 0.25])
    _close(m.recall(REC, TRUTH, 4), [2 / 3, 1])
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    _close(m.ndcg(REC, TRUTH, 4), [dcg / idcg, 1])
    _close(m.mrr(REC, TRUTH, 4), [0.5, 1])
    _close(m.average_precision(REC, TRUTH, 4), [(1 / 2 + 2 / 4) / 3, 1])


def test_accuracy_at_2_truncates() -> None:
    _close(m.recall(REC, TRUTH, 2), [1 / 3, 1])
    _close(m.ndcg(REC, TRUTH, 2), [(1 / math.log2(3)) / (1 + 1 / math.log2(3)), 1])
    _close(m.average_precision(REC, TRUTH, 2), [0.5 / 2, 1])
    _close(m.mrr(np.array([[9, 8, 1]]), TRUTH[:1], 2), [0])


def test_users_without_relevant_items_are_refused() -> None:
    empty = sp.csr_matrix((1, 10))
    with pytest.raises(ValueError, match="at least one relevant item"):
        m.recall(REC[:1], empty, 4)


def test_beyond_accuracy_by_hand() -> None:
    assert m.coverage(REC, n_items=10) == 0.5
    category = np.array([0, 0, 5, 0, 0, 0, 0, 5, 0, 0])  # items 2 and 7 differ from 3 and 1
    assert m.intra_list_diversity(REC, category) == pytest.approx(4 / 6)
    popularity = np.array([8, 4, 2, 1, 0, 0, 0, 0, 0, 0])
    shown = [3, 1, 7, 2, 0]
    expected = np.mean([-math.log2(max(popularity[i], 1) / 8) for i in shown])
    assert m.novelty(REC, popularity, n_users=8) == pytest.approx(expected)
    assert m.popularity_bias(np.array([[0]]), popularity) == 1.0


def test_bootstrap_interval_and_paired_test() -> None:
    rng = np.random.default_rng(1)
    values = rng.random(2_000)
    ci = m.bootstrap_ci(values, n_boot=500, seed=3)
    assert ci.low < ci.mean < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * values.std() / math.sqrt(len(values)), rel=0.2)
    assert m.bootstrap_ci(values, n_boot=500, seed=3) == ci
    assert m.paired_test(values, values) == 1.0
    assert m.paired_test(values, values + 0.05 + rng.normal(0, 0.01, len(values))) < 1e-6


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(1, 12), st.integers(0, 10_000))
def test_metrics_stay_in_range_and_perfect_lists_score_one(users: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items = 40
    dense = rng.random((users, n_items)) < 0.1
    dense[np.arange(users), rng.integers(0, n_items, users)] = True  # everyone has something relevant
    truth = sp.csr_matrix(dense.astype(float))
    random_lists = np.array([rng.permutation(n_items)[:k] for _ in range(users)])
    for metric in m.ACCURACY.values():
        values = metric(random_lists, truth, k)
        assert ((values >= 0) & (values <= 1 + 1e-9)).all()
    perfect = np.full((users, k), -1)
    for u in range(users):
        relevant = truth.indices[truth.indptr[u] : truth.indptr[u + 1]][:k]
        perfect[u, : len(relevant)] = relevant
    assert m.ndcg(perfect, truth, k) == pytest.approx(np.ones(users))
    assert m.average_precision(perfect, truth, k) == pytest.approx(np.ones(users))
