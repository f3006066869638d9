"""MMR re-ranking: hand-worked lists, the lam extremes, and a row-by-row reference on seeded inputs."""

from __future__ import annotations

import numpy as np
import pytest

from shopsense.eval.metrics import intra_list_diversity
from shopsense.ranking.diversity import PAD, mmr


def _random_rows(
    seed: int, rows: int = 40, n: int = 25, n_items: int = 60, n_categories: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = np.stack([rng.choice(n_items, n, replace=False) for _ in range(rows)])
    scores = rng.random((rows, n)).round(2)  # rounding makes score ties
    return items, scores, rng.integers(0, n_categories, n_items)


def test_lam_one_keeps_the_score_order() -> None:
    items, scores, category = _random_rows(0)
    picked, picked_scores = mmr(items, scores, 10, 1.0, category=category)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert np.array_equal(picked, np.take_along_axis(items, order, 1))
    assert np.array_equal(picked_scores, np.take_along_axis(scores, order, 1))


def test_lam_zero_puts_distinct_categories_first() -> None:
    items = np.array([[0, 1, 2, 3, 4, 5]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    category = np.array([0, 0, 0, 1, 1, 2])
    picked, picked_scores = mmr(items, scores, 6, 0.0, category=category)
    # The top item first, then the best of each unseen category, then the rest by score.
    assert picked.tolist() == [[0, 3, 5, 1, 2, 4]]
    assert picked_scores.tolist() == [[0.9, 0.6, 0.4, 0.8, 0.7, 0.5]]


def test_diversity_grows_as_lam_falls() -> None:
    items, scores, category = _random_rows(1)
    diversity = [
        intra_list_diversity(mmr(items, scores, 8, lam, category=category)[0], category) for lam in (1, 0.5, 0)
    ]
    assert diversity[0] <= diversity[1] <= diversity[2]
    assert diversity[0] < diversity[2]


def test_output_is_a_reordered_subset_with_original_scores() -> None:
    items, scores, category = _random_rows(2)
    picked, picked_scores = mmr(items, scores, 12, 0.3, category=category)
    for row in range(len(items)):
        assert len(set(picked[row].tolist())) == 12
        assert set(picked[row].tolist()) <= set(items[row].tolist())
        score_of = dict(zip(items[row].tolist(), scores[row].tolist(), strict=True))
        assert picked_scores[row].tolist() == [score_of[i] for i in picked[row].tolist()]


def test_padding_is_ignored_and_fills_the_end() -> None:
    items = np.array([[PAD, 4, PAD, 2, 7], [PAD] * 5])
    scores = np.array([[np.nan, 0.2, -np.inf, 0.9, 0.5], [0.0] * 5])  # scores in empty slots don't matter
    picked, picked_scores = mmr(items, scores, 6, 0.5, category=np.array([0, 0, 0, 0, 0, 0, 0, 1]))
    # 2 first; then 7 (other category) beats 4 (same category as 2, lowest relevance).
    assert picked.tolist() == [[2, 7, 4, PAD, PAD, PAD], [PAD] * 6]
    assert picked_scores.tolist() == [[0.9, 0.5, 0.2] + [-np.inf] * 3, [-np.inf] * 6]


def test_vectors_by_cosine_by_hand() -> None:
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # 0 and 1 point the same way
    items = np.array([[0, 1, 2, 3]])
    scores = np.array([[1.0, 0.9, 0.5, 0.0]])  # relevance 1, 0.8, 0.5, 0
    # After 0: gains 0.5*0.8 - 0.5*1 = -0.1 for 1, 0.25 for 2, -0.5*0.71 for 3; then 1 (-0.1) before 3.
    assert mmr(items, scores, 4, 0.5, vectors=vectors)[0].tolist() == [[0, 2, 1, 3]]
    assert mmr(items, scores, 4, 1.0, vectors=vectors)[0].tolist() == [[0, 1, 2, 3]]


def _reference(items: np.ndarray, scores: np.ndarray, k: int, lam: float, similarity: np.ndarray) -> list[list[int]]:
    """MMR one row at a time, over a full item x item similarity matrix."""
    out = []
    for row in range(len(items)):
        cands = sorted((i for i in range(items.shape[1]) if items[row, i] != PAD), key=lambda i: -scores[row, i])
        values = [scores[row, i] for i in cands]
        low, span = min(values, default=0), max(values, default=0) - min(values, default=0)
        relevance = {i: (scores[row, i] - low) / span if span > 0 else 1.0 for i in cands}
        picked: list[int] = []
        while cands and len(picked) < k:
            near = [max((similarity[items[row, i], items[row, p]] for p in picked), default=0.0) for i in cands]
            gains = [lam * relevance[i] - (1 - lam) * n for i, n in zip(cands, near, strict=True)]
            best = cands[int(np.argmax(gains))]  # the first of equals: the higher score
            picked.append(best)
            cands.remove(best)
        out.append([int(items[row, i]) for i in picked] + [PAD] * (k - len(picked)))
    return out


@pytest.mark.parametrize("use", ["category", "vectors", "both"])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7])
def test_agrees_with_a_row_by_row_reference(use: str, lam: float) -> None:
    items, scores, category = _random_rows(3, rows=15, n=12)
    items[::4, 8:] = PAD
    vectors = np.random.default_rng(4).normal(size=(60, 4))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    same = (category[:, None] == category[None, :]).astype(float)
    kwargs = {"category": category if use != "vectors" else None, "vectors": vectors if use != "category" else None}
    similarity = {"category": same, "vectors": unit @ unit.T, "both": (same + unit @ unit.T) / 2}[use]
    assert mmr(items, scores, 10, lam, **kwargs)[0].tolist() == _reference(items, scores, 10, lam, similarity)


def test_unknown_categories_are_similar_to_nothing() -> None:
    items, scores = np.array([[0, 1, 2]]), np.array([[0.9, 0.8, 0.1]])
    assert mmr(items, scores, 3, 0.5, category=np.array([-1, -1, 0]))[0].tolist() == [[0, 1, 2]]
    assert mmr(items, scores, 3, 0.5, category=np.array([0, 0, 1]))[0].tolist() == [[0, 2, 1]]


def test_bad_inputs_are_refused() -> None:
    items, scores, category = np.array([[0, 1]]), np.array([[0.5, 0.4]]), np.array([0, 1])
    with pytest.raises(ValueError, match="categories or vectors"):
        mmr(items, scores, 2, 0.5)
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\]"):
        mmr(items, scores, 2, 1.5, category=category)
    with pytest.raises(ValueError, match="k must be at least 1"):
        mmr(items, scores, 0, 0.5, category=category)
    with pytest.raises(ValueError, match="one shape"):
        mmr(items, scores[:, :1], 2, 0.5, category=category)
    with pytest.raises(ValueError, match="item indices"):
        mmr(items + 1, scores, 2, 0.5, category=category)
    with pytest.raises(ValueError, match="finite"):
        mmr(items, np.array([[np.nan, 0.4]]), 2, 0.5, category=category)
