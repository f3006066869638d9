"""What latent-vector models share: scoring by dot product and item neighbours by cosine.

ALS and BPR both end with one vector per item; they differ only in how a user's vector is
found from a history row. That row may belong to a training user, a live session or a
shopper never seen in training, so a user's vector is always computed from the row itself,
never looked up by row position. The content model reuses :func:`cosine_neighbours` for its
text vectors.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from shopsense.features.interactions import Interactions
from shopsense.models.base import NotFitted, Recommender, ScoredItems, top_k


class FactorModel(Recommender):
    """Scores ``user · item (+ item bias)``; similar items are the nearest item vectors by cosine."""

    item_factors_: np.ndarray
    item_bias_: np.ndarray | None = None
    """Per-item offset added to every score (BPR learns one); None when the model has none."""

    @abstractmethod
    def _user_factors(self, matrix: sp.csr_matrix) -> np.ndarray:
        """One latent vector per row of a users x items weight matrix, from that row alone."""

    def _score(self, history: Interactions) -> np.ndarray:
        # In the factors' own precision: widening all item vectors to float64 first copied the
        # whole matrix on every call, a quarter of a live recommendation's time.
        item_factors = self.item_factors_
        users = np.asarray(self._user_factors(history.matrix), dtype=item_factors.dtype)
        scores = np.asarray(users @ item_factors.T, dtype=np.float64)
        if self.item_bias_ is not None:
            scores += self.item_bias_
        return scores

    def similar_items(self, items: np.ndarray, k: int) -> ScoredItems:
        """Cosine neighbours in the factor space; items the model knows nothing about have none."""
        if not hasattr(self, "n_items_"):
            raise NotFitted(f"{type(self).__name__} is not fitted: call fit() before similar_items()")
        return cosine_neighbours(self.item_factors_, items, k)


def cosine_neighbours(vectors: np.ndarray | sp.csr_matrix, items: np.ndarray, k: int) -> ScoredItems:
    """Top-k items by cosine of their vectors (dense or sparse rows), best first, never the item itself.

    Only positive similarities count: zero means nothing in common (or an all-zero vector, i.e.
    no information), so such items pad the list as -1 / -inf instead of appearing arbitrarily.
    """
    items = np.asarray(items, dtype=np.int64)
    unit = normalize(vectors)
    sim = unit[items] @ unit.T
    sim = sim.toarray() if sp.issparse(sim) else sim
    sim = np.asarray(sim, dtype=np.float64)
    sim[sim <= 0] = -np.inf
    sim[np.arange(len(items)), items] = -np.inf
    return top_k(sim, k)
