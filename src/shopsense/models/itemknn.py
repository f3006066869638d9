"""Item-kNN: items are similar when the same users are interested in both (cosine, shrunk, top-n)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from shopsense.models.base import Recommender


class ItemKNNConfig(BaseModel):
    """Neighbourhood size and the shrinkage that distrusts similarities built on few users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    neighbours: int = Field(100, ge=1, description="similar items kept per item")
    shrinkage: float = Field(10.0, ge=0, description="co-occurrence count added to the denominator")


class ItemKNN(Recommender):
    """Scores an item by the user's interest in its nearest neighbours."""

    config: ItemKNNConfig

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        self.config = config or ItemKNNConfig()

    def _fit(self, matrix: sp.csr_matrix) -> None:
        x = matrix.tocsc().astype(np.float64)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        co = (x.T @ x).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        rows, cols = co.nonzero()
        denom = norms[rows] * norms[cols] + self.config.shrinkage
        sim = sp.csr_matrix((np.asarray(co[rows, cols]).ravel() / denom, (rows, cols)), shape=co.shape)
        self.similarity_ = _keep_top(sim, self.config.neighbours)

    def _score(self, history: sp.csr_matrix) -> np.ndarray:
        return np.asarray((history @ self.similarity_.T).todense())


def _keep_top(sim: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep the n largest entries of each row (vectorised over the CSR arrays)."""
    sim = sim.tocsr()
    counts = np.diff(sim.indptr)
    row_of = np.repeat(np.arange(sim.shape[0]), counts)
    order = np.lexsort((-sim.data, row_of))
    rank = np.arange(len(order)) - np.repeat(sim.indptr[:-1], counts)
    keep = order[rank < n]
    return sp.csr_matrix((sim.data[keep], (row_of[keep], sim.indices[keep])), shape=sim.shape)
