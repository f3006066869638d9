"""The contract every candidate model keeps: fit on interactions, recommend top-k per user.

Top-k selection, exclusions, candidate restriction and persistence live here once; a model
only says how it learns (``_fit``) and how it scores all items for some users (``_score``).
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel

from shopsense.errors import ShopsenseError
from shopsense.features.interactions import Interactions

_FORMAT = b"shopsense-model-1\n"


class NotFitted(ShopsenseError):
    """``recommend`` was called before ``fit``."""


class Recommender(ABC):
    """Base of all candidate models. Constructors take one typed config; learned state ends in ``_``."""

    config: BaseModel

    def fit(self, interactions: Interactions) -> Self:
        """Learn from a user x item interaction matrix; returns self."""
        if interactions.matrix.shape[1] == 0:
            raise ValueError("cannot fit on an empty item catalogue")
        self.n_items_ = interactions.matrix.shape[1]
        self.history_ = interactions.matrix.tocsr()
        self._fit(interactions.matrix.tocsr())
        return self

    @abstractmethod
    def _fit(self, matrix: sp.csr_matrix) -> None: ...

    @abstractmethod
    def _score(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores ``(len(rows), n_items)`` for users whose histories are the rows given."""

    def recommend(
        self,
        history: sp.csr_matrix,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items and scores for each row of ``history`` (a users x items matrix).

        Args:
            history: what each user did (rows of the training matrix, or a live history).
            exclude: items not to recommend per row (e.g. already bought); same shape as history.
            candidates: restrict every list to these item indices.

        Returns:
            ``(items, scores)``, both ``(rows, k)``; item -1 and score -inf pad short lists.
        """
        if not hasattr(self, "n_items_"):
            raise NotFitted(f"{type(self).__name__} is not fitted: call fit() before recommend()")
        if history.shape[1] != self.n_items_:
            raise ValueError(f"history has {history.shape[1]} items, the model {self.n_items_}")
        scores = np.asarray(self._score(history.tocsr()), dtype=float)
        if candidates is not None:
            allowed = np.zeros(self.n_items_, dtype=bool)
            allowed[candidates] = True
            scores[:, ~allowed] = -np.inf
        if exclude is not None:
            rows, cols = exclude.nonzero()
            scores[rows, cols] = -np.inf
        return _top_k(scores, k)

    def save(self, path: Path) -> None:
        """Write the fitted model (config and learned state) to one file."""
        path.write_bytes(_FORMAT + pickle.dumps(self, protocol=5))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save`."""
        blob = path.read_bytes()
        if not blob.startswith(_FORMAT):
            raise ShopsenseError(f"{path} is not a shopsense model file")
        model = pickle.loads(blob[len(_FORMAT) :])
        if not isinstance(model, cls):
            raise ShopsenseError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Highest k per row, best first; ties broken by the lower item index for determinism."""
    k_eff = min(k, scores.shape[1])
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    items = np.take_along_axis(part, order, axis=1)
    top = np.take_along_axis(part_scores, order, axis=1)
    items = np.where(np.isneginf(top), -1, items)
    if k_eff < k:
        pad = k - k_eff
        items = np.pad(items, ((0, 0), (0, pad)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
    return items, top
