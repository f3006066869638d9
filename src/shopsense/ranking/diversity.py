"""Maximal marginal relevance: give up a little relevance so a list is not ten near-identical items.

Carbonell & Goldstein (1998) pick items one at a time, each maximising
``lam * relevance - (1 - lam) * (highest similarity to an item already picked)``. ``lam = 1`` is the
ranker's order; lower values spread the list over categories or embedding space. Relevance is the
row's scores min-max scaled to [0, 1], so ``lam`` means the same whatever scale the scores have.
"""

from __future__ import annotations

import numpy as np

PAD = -1
"""Item index of an empty slot."""


def mmr(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    lam: float,
    *,
    category: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each row's candidates by maximal marginal relevance, all rows at once.

    Similarity between two items is the cosine of their ``vectors``, or 1 for the same known
    ``category`` and 0 otherwise, or the mean of both when both are given.

    Args:
        items: (rows, n) candidate item indices; ``PAD`` slots are ignored.
        scores: (rows, n) their relevance scores, finite for real candidates.
        k: length of each returned list.
        lam: 1 keeps the score order, 0 maximises diversity after the top item.
        category: (n_items,) category code per item, -1 unknown (never similar to anything).
        vectors: (n_items, d) item embeddings; they are normalised here. Memory is rows x n x d.

    Returns:
        (rows, k) items and their original scores, ``PAD`` and -inf after the last real item.
        Ties go to the higher score, then to the earlier candidate, so equal input gives equal output.
    """
    items = np.asarray(items)
    scores = np.asarray(scores, dtype=np.float64)
    _check(items, scores, k, lam, category, vectors)
    valid = items != PAD
    # Score order first: then every argmax tie (all of them when lam == 1) follows the ranker.
    order = np.lexsort((-np.where(valid, scores, 0.0), ~valid), axis=1)
    items, scores, valid = (np.take_along_axis(a, order, 1) for a in (items, scores, valid))
    safe = np.where(valid, items, 0)
    codes = np.where(valid, np.asarray(category)[safe], PAD) if category is not None else None
    unit = _unit(vectors)[safe] * valid[..., None] if vectors is not None else None

    rows = np.arange(items.shape[0])
    relevance = _min_max(scores, valid)
    open_ = valid.copy()
    nearest = np.zeros(items.shape)  # highest similarity to any picked item; nothing picked yet
    out_items = np.full((items.shape[0], k), PAD, dtype=np.int64)
    out_scores = np.full((items.shape[0], k), -np.inf)
    for slot in range(min(k, items.shape[1])):
        gain = np.where(open_, lam * relevance - (1 - lam) * nearest, -np.inf)
        best = gain.argmax(axis=1)
        found = open_[rows, best]
        out_items[:, slot] = np.where(found, items[rows, best], PAD)
        out_scores[:, slot] = np.where(found, scores[rows, best], -np.inf)
        open_[rows, best] = False
        similar = _similarity_to(best, codes, unit)
        nearest = similar if slot == 0 else np.maximum(nearest, similar)
    return out_items, out_scores


def _check(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    lam: float,
    category: np.ndarray | None,
    vectors: np.ndarray | None,
) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not 0 <= lam <= 1:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    if category is None and vectors is None:
        raise ValueError("mmr needs item categories or vectors to tell similar items apart")
    if items.ndim != 2 or scores.shape != items.shape:
        raise ValueError(f"items and scores must be (rows, n) of one shape, got {items.shape} and {scores.shape}")
    if vectors is not None and np.ndim(vectors) != 2:
        raise ValueError(f"vectors must be (n_items, d), got shape {np.shape(vectors)}")
    sizes = [len(a) for a in (category, vectors) if a is not None]
    if items.size and (items.min() < PAD or items.max() >= min(sizes)):
        raise ValueError(f"item indices must lie in [0, {min(sizes)}) or be {PAD} for padding")
    if not np.isfinite(scores[items != PAD]).all():
        raise ValueError("scores of real candidates must be finite")


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; a zero vector stays zero (similar to nothing)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _min_max(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row's scores scaled to [0, 1] over its real candidates; 1 everywhere when they are all equal."""
    scores = np.where(valid, scores, 0.0)
    low = np.min(scores, axis=1, where=valid, initial=np.inf, keepdims=True)
    high = np.max(scores, axis=1, where=valid, initial=-np.inf, keepdims=True)
    span = high - low
    spread = span > 0
    return np.where(spread, (scores - np.where(spread, low, 0.0)) / np.where(spread, span, 1.0), 1.0)


def _similarity_to(best: np.ndarray, codes: np.ndarray | None, unit: np.ndarray | None) -> np.ndarray:
    """(rows, n) similarity of every candidate to the candidate just picked in its row."""
    rows = np.arange(len(best))
    parts = []
    if codes is not None:
        picked = codes[rows, best][:, None]
        parts.append(((codes == picked) & (picked != PAD)).astype(np.float64))
    if unit is not None:
        parts.append(np.einsum("rnd,rd->rn", unit, unit[rows, best]))
    similarity: np.ndarray = np.mean(parts, axis=0)
    return similarity
