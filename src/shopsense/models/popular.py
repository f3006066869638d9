"""Most popular: the same list for everyone, the baseline every model must beat."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from shopsense.models.base import Recommender


class PopularConfig(BaseModel):
    """How popularity is counted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field("weight", pattern="^(weight|users)$", description="sum of interest weight, or distinct users")


class Popular(Recommender):
    """Items ranked by total interest (time decay, if wanted, is applied when building interactions)."""

    config: PopularConfig

    def __init__(self, config: PopularConfig | None = None) -> None:
        self.config = config or PopularConfig()

    def _fit(self, matrix: sp.csr_matrix) -> None:
        counted = matrix if self.config.by == "weight" else (matrix > 0).astype(float)
        self.popularity_ = np.asarray(counted.sum(axis=0)).ravel()

    def _score(self, history: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.popularity_, (history.shape[0], 1))
