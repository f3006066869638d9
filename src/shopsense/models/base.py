"""The contract every candidate model keeps: fit on interactions, answer a :class:`RecQuery` with :class:`ScoredItems`.

Top-k selection, exclusions, candidate restriction, item-to-item similarity and persistence
live here once; a model only says how it learns (``_fit``) and how it scores all items for
some users' histories (``_score``). A history is an :class:`Interactions` (weights, ordered
sequences, catalogue), so sequence and content models share the contract with matrix models.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ValidationError

from shopsense.errors import ShopsenseError
from shopsense.features.interactions import Interactions, Sequences, as_history

_FORMAT = b"shopsense-model-1\n"
SCORED_CELLS = 1 << 24
"""Users x items scores held at once by :meth:`Recommender.recommend` (128 MB of float64); more users go in blocks."""

Evidence = Literal["bought_before", "goes_with", "trending", "popular", "taste", "similar", "browsing"]
"""What a candidate source can stand for in an explanation; :mod:`shopsense.ranking.reasons` words each."""


@dataclass(frozen=True)
class RecQuery:
    """What a model is asked: the top ``k`` items for every user row of ``history``.

    Attributes:
        history: what each user did: training interactions (``data.rows(users)``) or a live history; a bare
            users x items matrix, for models that need only weights, becomes one with :func:`as_history`.
        k: items per list.
        exclude: items not to recommend per row (e.g. already bought); same shape as ``history.matrix``.
        candidates: restrict every list to these item indices.
    """

    history: Interactions
    k: int
    exclude: sp.csr_matrix | None = None
    candidates: np.ndarray | None = None


@dataclass(frozen=True)
class ScoredItems:
    """Top-k lists, best first: one row per user of a :class:`RecQuery` (or per item, for similar items).

    Attributes:
        items: ``(rows, k)`` item indices; -1 pads a short list.
        scores: ``(rows, k)`` the model's scores of those items; -inf pads.
    """

    items: np.ndarray
    scores: np.ndarray


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

    # What the rest of shopsense needs to know about a model lives on its class, so that adding a model is
    # its module and one registry line: no table elsewhere lists model names.
    evidence: ClassVar[Evidence] = "taste"
    """The evidence group a candidate source of this model stands for in explanations
    (:mod:`shopsense.ranking.reasons`): ``goes_with`` for item-to-item models, ``trending``,
    ``bought_before``, ``browsing``, ``similar``; ``taste`` (the default) for models of a user's taste."""
    similar_items_rank: ClassVar[int | None] = None
    """Place of this model's item-to-item relation when a pipeline answers "similar items" (lower first,
    e.g. co-occurrence before factors); None: its ``similar_items`` is no answer (popularity, a user's
    own history), so a pipeline never asks it."""
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    """The parameters tried on the validation split when tuning (:mod:`shopsense.eval.tuning`), a few
    points at most; the default is the defaults alone."""
    sizes_itself: ClassVar[bool] = False
    """True when a ``max_minutes`` parameter only sizes the model (EASE keeps fewer items to end in time) and
    the model reports what it scaled down itself; False: the evaluation reports a cut ``max_minutes``."""
    fit_per_million: ClassVar[float] = 20.0
    """Budget estimate (:mod:`shopsense.eval.budget`): fit seconds per million training interactions
    (nnz of the users x items matrix), measured on 2 cores."""
    rank_per_billion: ClassVar[float] = 15.0
    """Budget estimate: seconds per billion (user, item) scores when ranking the whole catalogue."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules the fit imports beyond the core install (SASRec: torch, from the ``neural`` extra): what is
    tried unasked, like :mod:`shopsense.eval.choice`'s extra sources, is left out where they are missing."""

    @classmethod
    def adjust_estimate(cls, seconds: float, n_items: int, params: Mapping[str, Any]) -> float:
        """The budget's estimate of one fit and scoring (``seconds``, from the constants above) corrected
        for what they miss, e.g. a cost cubic in the items or a fit that stops at a time limit.

        Args:
            seconds: the estimate from ``fit_per_million`` and ``rank_per_billion``.
            n_items: items in the catalogue.
            params: the model's parameters as given (not yet validated).
        """
        return seconds

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

    def recommend(self, query: RecQuery) -> ScoredItems:
        """The top ``query.k`` items and their scores for each user row of ``query.history``.

        Args:
            query: the users' histories, the list length, items to exclude per user and the candidates allowed.

        Returns:
            One row per user, best first; item -1 and score -inf pad a short list.
        """
        if not hasattr(self, "n_items_"):
            raise NotFitted(f"{type(self).__name__} is not fitted: call fit() before recommend()")
        data, k, exclude, candidates = query.history, query.k, query.exclude, query.candidates
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
        return ScoredItems(np.vstack([part.items for part in parts]), np.vstack([part.scores for part in parts]))

    def _top_k(
        self, data: Interactions, k: int, exclude: sp.csr_matrix | None, allowed: np.ndarray | None
    ) -> ScoredItems:
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

    def similar_items(self, items: np.ndarray, k: int) -> ScoredItems:
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
        return self.recommend(RecQuery(history, k, exclude=one_hot))

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


def top_k(scores: np.ndarray, k: int) -> ScoredItems:
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
    return ScoredItems(items, top)
