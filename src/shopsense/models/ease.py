"""EASE (Steck 2019): a closed-form item-item linear model, strong on implicit feedback.

It inverts an items x items matrix over the items with any interaction, so memory grows with
those items squared: above ``max_items`` it either keeps the most popular items or refuses,
never runs out of memory. Items nobody interacted with are never recommended by it.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shopsense.errors import ShopsenseError
from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender


class EASEConfig(BaseModel):
    """Regularisation and the catalogue-size guard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    l2: float = Field(500.0, gt=0, description="L2 penalty on the item-item weights")
    max_items: int = Field(20_000, ge=1, description="largest catalogue modelled (items² floats in memory)")
    over_limit: str = Field("top", pattern="^(top|refuse)$", description="above max_items: keep top items or refuse")


class EASE(Recommender):
    """Scores = history @ B, with B the ridge solution that may not use an item to predict itself."""

    config: EASEConfig

    def __init__(self, config: EASEConfig | None = None) -> None:
        self.config = config or EASEConfig()

    def _fit(self, data: Interactions) -> None:
        matrix = data.matrix
        popularity = np.asarray((matrix > 0).sum(axis=0)).ravel()
        # Items nobody touched have an all-zero Gram row: they cost items² memory and can never score.
        kept = np.flatnonzero(popularity > 0)
        if len(kept) > self.config.max_items:
            if self.config.over_limit == "refuse":
                gib = len(kept) ** 2 * 8 / 2**30
                raise ShopsenseError(
                    f"EASE: {len(kept):,} items need ~{gib:.1f} GiB; raise max_items or set over_limit='top'"
                )
            kept = np.sort(np.argsort(-popularity, kind="stable")[: self.config.max_items])
        x = matrix[:, kept]
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        inverse = np.linalg.inv(gram)
        b = inverse / -np.diag(inverse)
        b[np.diag_indices_from(b)] = 0.0
        self.kept_ = kept
        self.weights_ = b

    def _score(self, history: Interactions) -> np.ndarray:
        scores = np.full((history.matrix.shape[0], self.n_items_), -np.inf)
        scores[:, self.kept_] = np.asarray(history.matrix[:, self.kept_] @ self.weights_)
        return scores
