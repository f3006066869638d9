"""The contract every candidate model keeps: fit on interactions, recommend top-k per user.

Top-k selection, exclusions, candidate restriction, item-to-item similarity and persistence
live here once; a model only says how it learns (``_fit``) and how it scores all items for
some users' histories (``_score``). A history is an :class:`Interactions` (weights, ordered
sequences, catalogue), so sequence and content models share the contract with matrix models.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ValidationError

from shopsense.errors import ShopsenseError
from shopsense.features.interactions import Interactions, Sequences, as_history

_FORMAT = b"shopsense-model-1\n"
SCORED_CELLS = 1 << 24
"""Users x items scores held at once by :meth:`Recommender.recommend` (128 MB of float64); more users go in blocks."""


class NotFitted(ShopsenseError):
    """``recommend`` was called before ``fit``."""


class Recommender(ABC):
    """Base of all candidate models. Constructors take one typed config; learned state ends in ``_``."""

    config: BaseModel
    needs_sequences = False
    """True for models that read event order and time, not only the weight matrix."""
    serves_cold_users = False
    """True for models whose list means something for a user with no history (popularity does;
    a personal model's scores for an empty history are ties, not a ranking)."""

    def fit(self, interactions: Interactions) -> Self:
        """Learn from interactions (the training period only); returns self."""
        if interactions.matrix.shape[1] == 0:
            raise ValueError("cannot fit on an empty item catalogue")
        self._require_sequences(interactions)
        self.n_items_ = interactions.matrix.shape[1]
        self._fit(interactions)
        return self

    @abstractmethod
    def _fit(self, data: Interactions) -> None: ...

    @abstractmethod
    def _score(self, history: Interactions) -> np.ndarray:
        """Scores ``(users, n_items)`` for the users whose histories are given."""

    def recommend(
        self,
        history: Interactions | sp.csr_matrix,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items and scores for each user of ``history``.

        Args:
            history: what each user did: training interactions (``data.rows(users)``), a live
                history, or a bare users x items matrix for models that need only weights.
            exclude: items not to recommend per row (e.g. already bought); same shape as the matrix.
            candidates: restrict every list to these item indices.

        Returns:
            ``(items, scores)``, both ``(rows, k)``; item -1 and score -inf pad short lists.
        """
        if not hasattr(self, "n_items_"):
            raise NotFitted(f"{type(self).__name__} is not fitted: call fit() before recommend()")
        data = as_history(history)
        if data.matrix.shape[1] != self.n_items_:
            raise ValueError(f"history has {data.matrix.shape[1]} items, the model {self.n_items_}")
        self._require_sequences(data)
        allowed = None
        if candidates is not None:
            allowed = np.zeros(self.n_items_, dtype=bool)
            allowed[candidates] = True
        n_rows = data.matrix.shape[0]
        chunk = max(1, SCORED_CELLS // max(self.n_items_, 1))
        if n_rows <= chunk:
            return self._top_k(data, k, exclude, allowed)
        # Users x items scores are dense: a few thousand users of a 100k-item catalogue are gigabytes.
        parts = [
            self._top_k(
                data.rows(np.arange(start, min(start + chunk, n_rows))),
                k,
                exclude[start : start + chunk] if exclude is not None else None,
                allowed,
            )
            for start in range(0, n_rows, chunk)
        ]
        return np.vstack([items for items, _ in parts]), np.vstack([scores for _, scores in parts])

    def _top_k(
        self, data: Interactions, k: int, exclude: sp.csr_matrix | None, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score one block of users and keep each one's top k."""
        scores = np.asarray(self._score_for(data, exclude), dtype=float)
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        if exclude is not None:
            rows, cols = exclude.nonzero()
            scores[rows, cols] = -np.inf
        return top_k(scores, k)

    def _score_for(self, history: Interactions, exclude: sp.csr_matrix | None) -> np.ndarray:
        """Scores knowing what will be excluded; two-stage models override it to pick other candidates."""
        return self._score(history)

    def similar_items(self, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items most related to each given item, never the item itself.

        The default asks the model what it would recommend to someone whose whole history is
        that one item; models with an explicit similarity override this.
        """
        if not hasattr(self, "n_items_"):
            raise NotFitted(f"{type(self).__name__} is not fitted: call fit() before similar_items()")
        items = np.asarray(items, dtype=np.int64)
        rows = np.arange(len(items))
        one_hot = sp.csr_matrix((np.ones(len(items)), (rows, items)), shape=(len(items), self.n_items_))
        sequences = Sequences(
            np.arange(len(items) + 1, dtype=np.int64),
            items.astype(np.int32),
            np.zeros(len(items), dtype=np.int16),
            np.zeros(len(items), dtype=np.int64),
            np.ones(len(items)),
            ("view",),
        )
        ids = as_history(one_hot)
        history = Interactions(one_hot, ids.users, ids.items, sequences)
        return self.recommend(history, k, exclude=one_hot)

    def _require_sequences(self, data: Interactions) -> None:
        if self.needs_sequences and data.sequences is None:
            raise ValueError(f"{type(self).__name__} needs event sequences: build histories with build_interactions")

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled model with its config re-validated (:func:`current_config`), so a bundle saved
        before a setting existed loads with that setting's default instead of failing when it is read."""
        self.__dict__.update(state)
        if isinstance(state.get("config"), BaseModel):
            self.config = current_config(state["config"])

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


def current_config(config: BaseModel) -> BaseModel:
    """``config`` validated again through its class: fields added since it was pickled get their defaults.

    Pickle restores a pydantic model's fields as they were saved, so a newer setting is simply absent
    and the first read of it raises. Nested configs are rebuilt too. A config the class no longer
    accepts (a setting since removed) is returned as it was: it still serves what it was trained for.
    """
    try:
        return type(config).model_validate(_plain(config))
    except ValidationError:
        return config


def _plain(value: Any) -> Any:
    """Pydantic models as dicts of their stored fields, recursively (through lists and tuples)."""
    if isinstance(value, BaseModel):
        return {name: _plain(field) for name, field in value.__dict__.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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
