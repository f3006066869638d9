"""Weighted hybrid: several candidate models' scores, normalised per user, blended by weight.

Different models are right about different things (repeat-buy about staples, item-kNN about
complements, trending about what is new), and their raw scores live on unrelated scales, so
each part's scores are rescaled to [0, 1] per user before the weighted sum. The weights are
configuration, tuned on the validation split; a learned ranker replaces this in the ranking stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender
from shopsense.models.registry import build_model


class HybridPart(BaseModel):
    """One member of the blend: a registered model name, its parameters and its weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    weight: float = Field(1.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class HybridConfig(BaseModel):
    """The parts of the blend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parts: tuple[HybridPart, ...] = Field(
        (
            HybridPart(model="repeat_buy", weight=1.0),
            HybridPart(model="item_knn", weight=1.0),
            HybridPart(model="popular", weight=0.2, params={"half_life_days": 14.0}),
        ),
        min_length=1,
    )


class Hybrid(Recommender):
    """Sum of per-user min-max normalised scores of its parts, each times its weight."""

    config: HybridConfig
    fit_per_million = 20.0

    def __init__(self, config: HybridConfig | None = None) -> None:
        self.config = config or HybridConfig()
        if any(part.model == "hybrid" for part in self.config.parts):
            raise ValueError("a hybrid cannot contain a hybrid")
        self.parts_ = [build_model(part.model, part.params) for part in self.config.parts]
        self.needs_sequences = any(part.needs_sequences for part in self.parts_)
        self.serves_cold_users = any(part.serves_cold_users for part in self.parts_)

    def _fit(self, data: Interactions) -> None:
        for part in self.parts_:
            part.fit(data)

    def _score(self, history: Interactions) -> np.ndarray:
        total = np.zeros((history.matrix.shape[0], self.n_items_))
        for spec, part in zip(self.config.parts, self.parts_, strict=True):
            total += spec.weight * normalise_rows(np.asarray(part._score(history), dtype=float))
        return total


def normalise_rows(scores: np.ndarray) -> np.ndarray:
    """Rescale each row's finite scores to [0, 1]; -inf (not a candidate) becomes 0."""
    finite = np.isfinite(scores)
    low = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    out: np.ndarray = np.where(finite, (scores - np.where(np.isfinite(low), low, 0.0)) / span, 0.0)
    return out
