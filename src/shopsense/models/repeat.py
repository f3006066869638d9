"""Repeat-buy ("buy it again"): the user's own purchases, weighted by how often and how recently.

In grocery and household retail most of next month's basket was bought before; this model
is the strong baseline that generic recommenders (which exclude seen items) miss. Every
past purchase adds ``0.5 ** (age / half_life)``, so frequency and recency both count.
Items the user never bought follow, ordered by global popularity, so lists are always full.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender


class RepeatBuyConfig(BaseModel):
    """Which events count as buying, and how fast old purchases fade."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: tuple[str, ...] = Field(("purchase",), min_length=1, description="event types that count as a purchase")
    half_life_days: float | None = Field(60.0, gt=0, description="a purchase this old counts half; None: no decay")
    fill_popular: bool = Field(True, description="rank never-bought items after, by popularity")


class RepeatBuy(Recommender):
    """Scores the user's past purchases by decayed frequency."""

    config: RepeatBuyConfig
    needs_sequences = True

    def __init__(self, config: RepeatBuyConfig | None = None) -> None:
        self.config = config or RepeatBuyConfig()

    def _fit(self, data: Interactions) -> None:
        bought = self._purchases(data)
        counts = np.asarray((bought > 0).sum(axis=0)).ravel().astype(float)
        # Popularity stays strictly below one decayed purchase so it only orders the tail.
        self.fallback_ = 1e-3 * counts / max(counts.max(initial=0.0), 1.0) if self.config.fill_popular else None

    def _score(self, history: Interactions) -> np.ndarray:
        scores: np.ndarray = self._purchases(history).toarray()
        if self.fallback_ is None:
            scores[scores <= 0] = -np.inf
        else:
            scores += self.fallback_
        return scores

    def _purchases(self, data: Interactions) -> sp.csr_matrix:
        """Users x items sum of decayed purchase events (returns subtract)."""
        seq = data.sequences
        assert seq is not None  # guaranteed by needs_sequences
        codes = [seq.type_code(name) for name in self.config.types]
        chosen = np.isin(seq.types, [c for c in codes if c >= 0])
        sign = np.where(seq.weights < 0, -1.0, 1.0)
        chosen |= seq.weights < 0  # returns cancel what was bought
        value = sign.copy()
        if self.config.half_life_days is not None and len(seq.times):
            now = data.as_of if data.as_of is not None else int(seq.times.max())
            value *= np.power(0.5, np.maximum(now - seq.times, 0) / 86_400 / self.config.half_life_days)
        users = np.repeat(np.arange(len(seq.indptr) - 1), np.diff(seq.indptr))
        matrix = sp.csr_matrix(
            (value[chosen], (users[chosen], seq.items[chosen])), shape=(len(seq.indptr) - 1, self.n_items_)
        )
        matrix.sum_duplicates()
        matrix.data[matrix.data < 0] = 0
        return matrix
