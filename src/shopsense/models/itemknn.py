"""Item-kNN: items are similar when the same users are interested in both.

Asymmetric cosine (Aiolli 2013) generalises cosine: ``sim(i, j) = co(i, j) / (|i|^2a * |j|^2(1-a))``
with ``a = 0.5`` the plain cosine; retail data with a few blockbuster items often prefers
``a`` above 0.5, which stops popular neighbours from dominating. Shrinkage distrusts
similarities built on few users; only the top neighbours per item are kept.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender, top_k


class ItemKNNConfig(BaseModel):
    """Neighbourhood size, similarity shape and shrinkage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    neighbours: int = Field(100, ge=1, description="similar items kept per item")
    shrinkage: float = Field(10.0, ge=0, description="added to the denominator: distrust rare co-occurrences")
    asymmetry: float = Field(0.5, ge=0, le=1, description="asymmetric cosine alpha; 0.5 is plain cosine")
    binary: bool = Field(False, description="count co-occurring users instead of summing interest weights")


class ItemKNN(Recommender):
    """Scores an item by the user's interest in its nearest neighbours."""

    config: ItemKNNConfig

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        self.config = config or ItemKNNConfig()

    def _fit(self, data: Interactions) -> None:
        self._similarity_t: sp.csr_matrix | None = None
        self.similarity_ = neighbour_similarity(
            data.matrix.T.tocsr(),
            self.config.neighbours,
            self.config.shrinkage,
            self.config.asymmetry,
            self.config.binary,
        )

    def _score(self, history: Interactions) -> np.ndarray:
        # Transposed once and kept: converting a catalogue-sized matrix per request dominated serving.
        if getattr(self, "_similarity_t", None) is None:
            self._similarity_t = self.similarity_.T.tocsr()
        return np.asarray((history.matrix @ self._similarity_t).todense())

    def similar_items(self, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The learned neighbours themselves, best first."""
        sim = self.similarity_[np.asarray(items)].toarray()
        sim[sim <= 0] = -np.inf
        sim[np.arange(len(items)), items] = -np.inf
        return top_k(sim, k)


def neighbour_similarity(
    vectors: sp.csr_matrix, neighbours: int, shrinkage: float, asymmetry: float = 0.5, binary: bool = False
) -> sp.csr_matrix:
    """Row x row asymmetric-cosine similarity of sparse vectors, top ``neighbours`` per row, no self.

    Shared by item-kNN (rows are items) and user-kNN (rows are users).
    """
    x = vectors.tocsr().astype(np.float64)
    if binary:
        x.data[:] = 1.0
    sq = np.asarray(x.multiply(x).sum(axis=1)).ravel()
    co = (x @ x.T).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    co.sort_indices()  # ties at the top-n cut go to the lower index, as on Spark (shopsense.spark.cooccurrence)
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
    denom = np.power(sq[rows], asymmetry) * np.power(sq[co.indices], 1 - asymmetry) + shrinkage
    sim = sp.csr_matrix((co.data / denom, co.indices, co.indptr), shape=co.shape)
    return keep_top(sim, neighbours)


def keep_top(sim: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep the n largest entries of each row (vectorised over the CSR arrays)."""
    sim = sim.tocsr()
    counts = np.diff(sim.indptr)
    row_of = np.repeat(np.arange(sim.shape[0]), counts)
    order = np.lexsort((-sim.data, row_of))
    rank = np.arange(len(order)) - np.repeat(sim.indptr[:-1], counts)
    keep = order[rank < n]
    return sp.csr_matrix((sim.data[keep], (row_of[keep], sim.indices[keep])), shape=sim.shape)
