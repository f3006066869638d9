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
from shopsense.models.base import Recommender, ScoredItems, top_k
from shopsense.models.neighbours import neighbour_similarity


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
    evidence = "goes_with"
    similar_items_rank = 0
    tuning_grid = (
        {"neighbours": 50, "asymmetry": 0.5},
        {"neighbours": 200, "asymmetry": 0.5},
        {"neighbours": 200, "asymmetry": 0.8},
        {"neighbours": 200, "asymmetry": 0.5, "binary": True},
    )
    fit_per_million = 15.0

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

    def similar_items(self, items: np.ndarray, k: int) -> ScoredItems:
        """The learned neighbours themselves, best first."""
        sim = self.similarity_[np.asarray(items)].toarray()
        sim[sim <= 0] = -np.inf
        sim[np.arange(len(items)), items] = -np.inf
        return top_k(sim, k)
