"""Most popular and trending: the same list for everyone, the baseline every model must beat.

Global popularity counts all training interest. Trending counts only recent events,
each decayed by age with a half-life measured back from the end of training, so this
week's hits beat last year's; it is the cold-start answer for a user with no history.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender


class PopularConfig(BaseModel):
    """How popularity is counted, and over which recent window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field("weight", pattern="^(weight|users)$", description="sum of interest weight, or distinct users")
    window_days: float | None = Field(None, gt=0, description="trending: only events this recent count")
    half_life_days: float | None = Field(None, gt=0, description="trending: an event this old counts half")


class Popular(Recommender):
    """Items ranked by total (or recent, decayed) interest."""

    config: PopularConfig
    serves_cold_users = True
    evidence = "trending"
    tuning_grid = ({}, {"half_life_days": 7.0}, {"half_life_days": 30.0})
    fit_per_million = 0.5

    def __init__(self, config: PopularConfig | None = None) -> None:
        self.config = config or PopularConfig()

    def _fit(self, data: Interactions) -> None:
        if self.config.window_days is None and self.config.half_life_days is None:
            counted = data.matrix if self.config.by == "weight" else (data.matrix > 0).astype(float)
            self.popularity_ = np.asarray(counted.sum(axis=0)).ravel()
            return
        if data.sequences is None or data.as_of is None:
            raise ValueError("trending needs event sequences with times: build interactions from events")
        seq = data.sequences
        age_days = (data.as_of - seq.times) / 86_400
        weight = seq.weights.copy()
        if self.config.half_life_days is not None:
            weight = np.power(0.5, np.maximum(age_days, 0) / self.config.half_life_days)
        if self.config.window_days is not None:
            weight = np.where(age_days <= self.config.window_days, weight, 0.0)
        # Ties (and items with no recent events) fall back to all-time popularity, scaled below one event.
        overall = np.asarray((data.matrix > 0).sum(axis=0)).ravel()
        self.popularity_ = np.bincount(seq.items, weights=weight, minlength=self.n_items_) + 1e-6 * overall / max(
            overall.max(initial=0), 1
        )

    def _score(self, history: Interactions) -> np.ndarray:
        return np.tile(self.popularity_, (history.matrix.shape[0], 1))
