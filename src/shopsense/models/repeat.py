"""Repeat-buy ("buy it again"): the user's own purchases, weighted by how often and how recently.

In grocery and household retail most of next month's basket was bought before; this model
is the strong baseline that generic recommenders (which exclude seen items) miss. Every
past purchase adds ``0.5 ** (age / half_life)``, so frequency and recency both count.
Items the user never bought follow, ordered by global popularity, so lists are always full.

With ``neighbours`` > 0 it is TIFU-KNN's idea (Hu et al., SIGIR 2020) on the same decayed vectors:
the shopper's own repeat vector, cut to unit length, is blended with the mean unit vector of the
``neighbours`` training shoppers whose vectors are most alike (cosine; never the shopper's own row),
``own_share`` of the score from the first. A shopper's next basket holds items they have not bought
yet but their look-alikes re-buy (the second pack of nappies, this season's staples); the neighbours
put those above popularity while the own vector keeps the repeat items first.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender
from shopsense.models.neighbours import nearest_users


class RepeatBuyConfig(BaseModel):
    """Which events count as buying, and how fast old purchases fade."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: tuple[str, ...] = Field(("purchase",), min_length=1, description="event types that count as a purchase")
    half_life_days: float | None = Field(60.0, gt=0, description="a purchase this old counts half; None: no decay")
    fill_popular: bool = Field(True, description="rank never-bought items after, by popularity")
    neighbours: int = Field(0, ge=0, description="look-alike shoppers blended in (TIFU-KNN); 0: own purchases only")
    own_share: float = Field(0.9, ge=0, le=1, description="with neighbours: the share of the score from own purchases")


class RepeatBuy(Recommender):
    """Scores the user's past purchases by decayed frequency."""

    config: RepeatBuyConfig
    needs_sequences = True
    evidence = "bought_before"
    tuning_grid = (
        {"half_life_days": None},
        {"half_life_days": 30.0},
        {"half_life_days": 180.0},
        {"half_life_days": 30.0, "neighbours": 300, "own_share": 0.9},  # TIFU-KNN's blend
        {"half_life_days": 30.0, "neighbours": 300, "own_share": 0.7},
        {"half_life_days": 30.0, "neighbours": 300, "own_share": 0.5},
    )
    fit_per_million = 1.0

    def __init__(self, config: RepeatBuyConfig | None = None) -> None:
        self.config = config or RepeatBuyConfig()

    def _fit(self, data: Interactions) -> None:
        bought = self._purchases(data)
        counts = np.asarray((bought > 0).sum(axis=0)).ravel().astype(float)
        # Popularity stays strictly below one decayed purchase so it only orders the tail.
        self.fallback_ = 1e-3 * counts / max(counts.max(initial=0.0), 1.0) if self.config.fill_popular else None
        if self.config.neighbours:
            self.train_, self.users_ = _unit_rows(bought), data.users

    def _score(self, history: Interactions) -> np.ndarray:
        bought = self._purchases(history)
        if self.config.neighbours:
            scores = self._blend(history, bought)
            floor = 1e-6  # a unit vector's entries: the fallback must stay below the smallest kept one
        else:
            scores, floor = bought.toarray(), 1.0
        if self.fallback_ is None:
            scores[scores <= 0] = -np.inf
        else:
            scores += floor * self.fallback_
        return scores

    def _blend(self, history: Interactions, bought: sp.csr_matrix) -> np.ndarray:
        """``own_share`` x the unit own vector + the rest x the mean unit vector of the nearest shoppers."""
        own = _unit_rows(bought)
        rows = np.array(self.users_.index(history.users.values))
        k = self.config.neighbours
        similar = nearest_users(own, rows, self.train_, k, desc="look-alike shoppers")  # cosine: unit rows
        similar.data[:] = 1.0 / k  # TIFU-KNN averages the neighbours' vectors
        share = self.config.own_share
        return np.asarray((share * own + (1 - share) * (similar @ self.train_)).todense())

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


def _unit_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its L2 norm (empty rows stay empty)."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ matrix)
