"""User-kNN: recommend what the most similar shoppers were interested in.

Similarity is computed between the history being scored and every training user at
request time, so a brand-new or live history works without refitting. A training user's
own row is never its own neighbour.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender
from shopsense.models.neighbours import nearest_users


class UserIds(frozenset[str]):
    """Users named by id: the predicate :meth:`UserKNN.forget_users` (and
    :meth:`~shopsense.pipeline.Pipeline.forget_users`) take, found through the id index instead of
    being asked about every user."""

    def __call__(self, user: str) -> bool:
        return user in self


class UserKNNConfig(BaseModel):
    """Neighbourhood size and the shrinkage that distrusts overlaps of few items."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    neighbours: int = Field(50, ge=1, description="similar users whose interest is summed")
    shrinkage: float = Field(5.0, ge=0, description="added to the cosine denominator")
    binary: bool = Field(False, description="compare users by which items, not how much interest")


class UserKNN(Recommender):
    """Scores = sum over the k most similar training users of similarity x their interest."""

    config: UserKNNConfig
    tuning_grid = ({"neighbours": 20}, {"neighbours": 100}, {"neighbours": 100, "binary": True})
    fit_per_million = 1.0
    rank_per_billion = 250.0

    def __init__(self, config: UserKNNConfig | None = None) -> None:
        self.config = config or UserKNNConfig()

    def _fit(self, data: Interactions) -> None:
        self.train_ = self._prepare(data.matrix)
        self.norms_ = np.sqrt(np.asarray(self.train_.multiply(self.train_).sum(axis=1)).ravel())
        self.users_ = data.users

    def forget_users(self, erased: Callable[[str], bool]) -> int:
        """Drop the training rows of erased users, so they are nobody's neighbour any more; the rows
        dropped. ``erased`` tells them by id: a :class:`UserIds` is looked up in the id index (a few
        users, however many were trained on); any other predicate is asked about every training user.
        The rows are emptied in a copy of the matrix (O(nnz), in numpy) that then replaces it, so a
        request scoring meanwhile sees the old matrix or the new one. The fitted ids stay, so a
        returning user's own old row (now empty) is still never its own neighbour."""
        n = self.train_.shape[0]
        if isinstance(erased, UserIds):
            rows = np.asarray(self.users_.index(sorted(erased)), dtype=np.int64)
            rows = rows[rows >= 0]
        else:
            rows = np.flatnonzero(np.fromiter(map(erased, self.users_.values), dtype=bool, count=n))
        if not len(rows):
            return 0
        gone = np.zeros(n, dtype=bool)
        gone[rows] = True
        train = self.train_.copy()
        train.data[np.repeat(gone, np.diff(train.indptr))] = 0.0
        train.eliminate_zeros()
        norms = self.norms_.copy()
        norms[gone] = 0.0
        self.train_, self.norms_ = train, norms
        return len(rows)

    def _score(self, history: Interactions) -> np.ndarray:
        h = self._prepare(history.matrix)
        h_norms = np.sqrt(np.asarray(h.multiply(h).sum(axis=1)).ravel())
        own = np.array(self.users_.index(history.users.values))

        def cosine(rows: np.ndarray, cols: np.ndarray, overlap: np.ndarray) -> np.ndarray:
            sim: np.ndarray = overlap / (h_norms[rows] * self.norms_[cols] + self.config.shrinkage)
            return sim

        similarity = nearest_users(h, own, self.train_, self.config.neighbours, cosine)
        return np.asarray((similarity @ self.train_).todense())

    def _prepare(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        x = matrix.tocsr().astype(np.float64)
        if self.config.binary:
            x.data[:] = 1.0
        return x
