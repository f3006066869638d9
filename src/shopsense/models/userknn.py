"""User-kNN: recommend what the most similar shoppers were interested in.

Similarity is computed between the history being scored and every training user at
request time, so a brand-new or live history works without refitting. A training user's
own row is never its own neighbour.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender
from shopsense.models.itemknn import keep_top


class UserKNNConfig(BaseModel):
    """Neighbourhood size and the shrinkage that distrusts overlaps of few items."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    neighbours: int = Field(50, ge=1, description="similar users whose interest is summed")
    shrinkage: float = Field(5.0, ge=0, description="added to the cosine denominator")
    binary: bool = Field(False, description="compare users by which items, not how much interest")


class UserKNN(Recommender):
    """Scores = sum over the k most similar training users of similarity x their interest."""

    config: UserKNNConfig

    def __init__(self, config: UserKNNConfig | None = None) -> None:
        self.config = config or UserKNNConfig()

    def _fit(self, data: Interactions) -> None:
        self.train_ = self._prepare(data.matrix)
        self.norms_ = np.sqrt(np.asarray(self.train_.multiply(self.train_).sum(axis=1)).ravel())
        self.users_ = data.users

    def _score(self, history: Interactions) -> np.ndarray:
        h = self._prepare(history.matrix)
        h_norms = np.sqrt(np.asarray(h.multiply(h).sum(axis=1)).ravel())
        overlap = (h @ self.train_.T).tocsr()
        rows = np.repeat(np.arange(overlap.shape[0]), np.diff(overlap.indptr))
        sim = overlap.data / (h_norms[rows] * self.norms_[overlap.indices] + self.config.shrinkage)
        own = np.array(self.users_.index(history.users.values))
        sim[overlap.indices == own[rows]] = 0.0
        similarity = keep_top(
            sp.csr_matrix((sim, overlap.indices, overlap.indptr), shape=overlap.shape), self.config.neighbours
        )
        return np.asarray((similarity @ self.train_).todense())

    def _prepare(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        x = matrix.tocsr().astype(np.float64)
        if self.config.binary:
            x.data[:] = 1.0
        return x
