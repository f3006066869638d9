"""RFM scores and the named RFM segments marketers already know.

Scores are quintiles by rank among purchasers (5 = best), so they mean the same thing in any
shop whatever its currency or order rhythm. Segments come from the common grid of the recency
score against the mean of the frequency and monetary scores (the "R x (F+M)/2" map): a marketer
reads "At risk" or "Champions" instead of three digits, and every tool that uses this grid
agrees with ours.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from shopsense.errors import ConfigError

PROSPECT = "Prospect"
SEGMENT_GRID: tuple[tuple[str, ...], ...] = (
    ("Lost", "Hibernating", "At risk", "At risk", "Cannot lose them"),  # R = 1
    ("Hibernating", "Hibernating", "At risk", "At risk", "Cannot lose them"),  # R = 2
    ("About to sleep", "About to sleep", "Need attention", "Loyal customers", "Loyal customers"),  # R = 3
    ("Promising", "Potential loyalists", "Potential loyalists", "Loyal customers", "Loyal customers"),  # R = 4
    ("New customers", "Potential loyalists", "Potential loyalists", "Champions", "Champions"),  # R = 5
)
"""Segment of each (R, FM) cell: row R - 1, column FM - 1, where FM = (F + M) / 2 rounded half up.

Recent buyers who buy little are new or promising; recent, frequent, big spenders are champions;
the same big spenders gone quiet are the ones the shop "cannot lose"; long-gone small buyers are lost.
"""
SEGMENTS: tuple[str, ...] = (*dict.fromkeys(name for row in SEGMENT_GRID for name in row), PROSPECT)
"""Every segment name, best-known order first, ``Prospect`` (no purchase yet) last."""

_GRID = np.array((*SEGMENT_GRID, (PROSPECT,) * 5), dtype=object)


def quintile_scores(values: np.ndarray, *, higher_is_better: bool = True) -> np.ndarray:
    """Score 1..5 by rank: the bottom fifth of customers scores 1, the top fifth 5.

    Ranks rather than value cut-offs keep the five groups equal in size on skewed spend. Tied
    values share their average rank, so equal customers always get equal scores whatever the
    row order (a large tie, e.g. everyone who bought once, lands in the quintile of its middle).

    Args:
        values: one value per purchaser (no NaN).
        higher_is_better: False for recency in days, where fewer days is better.

    Returns:
        int8 scores, ``ceil(5 * average_rank / n)``.
    """
    values = np.asarray(values, dtype=float)
    if np.isnan(values).any():
        raise ConfigError("quintile_scores: values contain NaN; score only customers who have purchased")
    if values.size == 0:
        return np.zeros(0, dtype=np.int8)
    ranks = rankdata(values if higher_is_better else -values, method="average")
    scores: np.ndarray = np.clip(np.ceil(5 * ranks / values.size), 1, 5).astype(np.int8)
    return scores


def rfm_segment_names(r_score: np.ndarray, f_score: np.ndarray, m_score: np.ndarray) -> np.ndarray:
    """Named segment of each customer from its R, F and M scores (0 everywhere = no purchase yet).

    Args:
        r_score, f_score, m_score: int arrays of equal shape with values 1..5, or 0 for a
            customer without purchases (then all three must be 0).

    Returns:
        str array of the same shape with names from :data:`SEGMENTS`.
    """
    r, f, m = (np.asarray(s, dtype=np.int64) for s in (r_score, f_score, m_score))
    if not r.shape == f.shape == m.shape:
        raise ConfigError(f"rfm_segment_names: score shapes differ ({r.shape}, {f.shape}, {m.shape})")
    scores = np.stack([r, f, m])
    if ((scores < 0) | (scores > 5)).any():
        raise ConfigError("rfm_segment_names: scores must be 1..5, or 0 for a customer without purchases")
    none = scores == 0
    mixed = none.any(axis=0) & ~none.all(axis=0)
    if mixed.any():
        at = int(np.flatnonzero(mixed.ravel())[0])
        raise ConfigError(f"rfm_segment_names: customer {at} has a 0 score beside a 1..5 one; 0 means no purchase")
    prospect = none[0]
    fm = (f + m + 1) // 2
    row = np.where(prospect, 5, r - 1)
    col = np.where(prospect, 0, fm - 1)
    return _GRID[row, col].astype(str)
