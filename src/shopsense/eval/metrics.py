"""Top-K ranking metrics over the whole catalogue, per user, vectorised.

Every function takes the recommended lists as a dense ``(users, K)`` array of item indices
(``-1`` pads a short list) and the held-out relevant items as a CSR matrix
``(users, items)``. Per-user values come back as arrays so that confidence intervals and
paired tests can be computed over users, not only means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats

PAD = -1


def hits(recommended: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Boolean ``(users, K)``: is the item at each rank relevant for that user?"""
    if recommended.shape[0] != truth.shape[0]:
        raise ValueError(f"{recommended.shape[0]} recommendation rows but {truth.shape[0]} truth rows")
    users, k = recommended.shape
    rows = np.repeat(np.arange(users), k)
    cols = recommended.ravel()
    valid = cols != PAD
    out = np.zeros(users * k, dtype=bool)
    if valid.any():
        out[valid] = np.asarray(truth[rows[valid], cols[valid]]).ravel() > 0
    shaped: np.ndarray = out.reshape(users, k)
    return shaped


def _relevant_counts(truth: sp.csr_matrix) -> np.ndarray:
    counts: np.ndarray = np.diff(truth.indptr)
    if (counts == 0).any():
        raise ValueError("every evaluated user needs at least one relevant item; filter users first")
    return counts


def _discounts(k: int) -> np.ndarray:
    weights: np.ndarray = 1.0 / np.log2(np.arange(2, k + 2))
    return weights


def hit_rate(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """1 where at least one of the top k is relevant."""
    found: np.ndarray = hits(recommended[:, :k], truth).any(axis=1).astype(float)
    return found


def precision(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """Relevant items among the top k, divided by k."""
    share: np.ndarray = hits(recommended[:, :k], truth).sum(axis=1) / k
    return share


def recall(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """Relevant items among the top k, divided by all of the user's relevant items."""
    share: np.ndarray = hits(recommended[:, :k], truth).sum(axis=1) / _relevant_counts(truth)
    return share


def ndcg(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """Binary-gain DCG of the top k over the best achievable DCG (min(relevant, k) hits on top)."""
    h = hits(recommended[:, :k], truth)
    disc = _discounts(k)
    dcg = (h * disc[: h.shape[1]]).sum(axis=1)
    ideal_len = np.minimum(_relevant_counts(truth), k)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[ideal_len]
    gain: np.ndarray = dcg / ideal
    return gain


def mrr(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """1 / rank of the first relevant item in the top k, 0 if none."""
    h = hits(recommended[:, :k], truth)
    first = h.argmax(axis=1)
    reciprocal: np.ndarray = np.where(h.any(axis=1), 1.0 / (first + 1), 0.0)
    return reciprocal


def average_precision(recommended: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """Mean of precision@i at each relevant rank i ≤ k, over min(relevant, k) (MAP@k per user)."""
    h = hits(recommended[:, :k], truth).astype(float)
    precision_at = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)
    ap: np.ndarray = (precision_at * h).sum(axis=1) / np.minimum(_relevant_counts(truth), k)
    return ap


ACCURACY = {
    "recall": recall,
    "ndcg": ndcg,
    "mrr": mrr,
    "hit_rate": hit_rate,
    "precision": precision,
    "map": average_precision,
}
"""Per-user accuracy metrics by name, each ``f(recommended, truth, k) -> per-user array``."""


def coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    shown = np.unique(recommended[recommended != PAD])
    return len(shown) / n_items


def novelty(recommended: np.ndarray, item_popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p) of recommended items, p = share of users who had the item.

    Unseen items count as seen by one user, so the value stays finite.
    """
    items = recommended[recommended != PAD]
    share = np.maximum(item_popularity[items], 1) / n_users
    return float(np.mean(-np.log2(share))) if len(items) else 0.0


def popularity_bias(recommended: np.ndarray, item_popularity: np.ndarray) -> float:
    """Average popularity percentile (0 = least, 1 = most popular) of recommended items."""
    items = recommended[recommended != PAD]
    if not len(items):
        return 0.0
    percentile = stats.rankdata(item_popularity, method="average") / len(item_popularity)
    return float(percentile[items].mean())


def intra_list_diversity(recommended: np.ndarray, item_category: np.ndarray) -> float:
    """Mean share of item pairs within a list whose categories differ (lists of < 2 items skipped)."""
    cats = np.where(recommended != PAD, item_category[np.maximum(recommended, 0)], PAD)
    present = recommended != PAD
    k = recommended.shape[1]
    i, j = np.triu_indices(k, 1)
    both = present[:, i] & present[:, j]
    differ = (cats[:, i] != cats[:, j]) & both
    pairs = both.sum(axis=1)
    keep = pairs > 0
    return float((differ.sum(axis=1)[keep] / pairs[keep]).mean()) if keep.any() else 0.0


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile-bootstrap 95% confidence interval."""

    mean: float
    low: float
    high: float


def bootstrap_ci(per_user: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap over users of the mean of a per-user metric."""
    rng = np.random.default_rng(seed)
    n = len(per_user)
    means = np.empty(n_boot)
    chunk = max(1, 5_000_000 // max(n, 1))  # bound the (chunk, n) index matrix
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        means[start:stop] = per_user[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(per_user.mean()), float(low), float(high))


def paired_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of a paired t-test on per-user values of two models (same users, same order)."""
    if a.shape != b.shape:
        raise ValueError("paired test needs the same users in the same order")
    if np.allclose(a, b):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)
