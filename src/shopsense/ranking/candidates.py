"""Candidate generation: the union of several models' top-N lists, each candidate tagged with its sources.

No single model finds everything worth ranking: repeat-buy finds staples, item-kNN complements,
trending what is new this week, ALS the long tail of taste, content the items nobody has
touched yet. The ranker sees every source's score and rank for each candidate (NaN where a
source did not propose it), so it can learn which source to trust for whom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender, RecQuery
from shopsense.models.registry import build_model


class Source(BaseModel):
    """One candidate model: a registered model name, its parameters, and how many items it proposes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="label of this source in features and reasons")
    model: str
    n: int = Field(50, ge=1, le=10_000)
    params: dict[str, Any] = Field(default_factory=dict)
    optional: bool = Field(False, description="skip this source when the data cannot feed it (e.g. no item text)")


class CandidateConfig(BaseModel):
    """The sources whose lists are merged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[Source, ...] = Field(
        (
            Source(name="trending", model="popular", n=30, params={"half_life_days": 7.0}),
            Source(name="repeat", model="repeat_buy", n=30, params={"fill_popular": False}),
            Source(name="co_bought", model="item_knn", n=50),
            Source(name="taste", model="als", n=50),
        ),
        min_length=1,
    )

    @model_validator(mode="after")
    def _unique_names(self) -> CandidateConfig:
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"candidate source names must be unique, got {names}")
        return self


@dataclass(frozen=True)
class Candidates:
    """Per user row, the merged candidate items (-1 pads) and each source's score and 1-based rank (NaN: absent)."""

    items: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    sources: tuple[str, ...]

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user row, item) of every real candidate, row-major: the order feature rows follow."""
        rows, cols = np.nonzero(self.items >= 0)
        return rows, self.items[rows, cols]

    def flat(self, values: np.ndarray) -> np.ndarray:
        """A (rows, N, S) per-source array as (pairs, S), in :meth:`pairs` order."""
        return values[self.items >= 0]


class CandidateGenerator:
    """Fits every source on the same interactions and merges their top-N lists per user."""

    def __init__(self, config: CandidateConfig | None = None) -> None:
        self.config = config or CandidateConfig()
        self.models_: list[Recommender] = []

    def fit(self, data: Interactions) -> CandidateGenerator:
        """Fit every source model; a required source that cannot learn from this data stops the fit with its name,
        an optional one is skipped and listed in ``skipped_``."""
        self.sources_: list[Source] = []
        self.skipped_: dict[str, str] = {}
        models = []
        for source in self.config.sources:
            try:
                models.append(build_model(source.model, source.params).fit(data))
                self.sources_.append(source)
            except ValueError as error:
                if not source.optional:
                    raise ValueError(f"candidate source {source.name!r} ({source.model}): {error}") from error
                self.skipped_[source.name] = str(error)
        self.models_ = models
        return self

    def generate(self, history: Interactions, exclude: sp.csr_matrix | None = None) -> Candidates:
        """Merged candidates for every user row of ``history`` (vectorised union, no per-user loop)."""
        if not self.models_:
            raise ValueError("candidate generator is not fitted")
        n_rows, n_items = history.matrix.shape
        blocks_items, blocks_scores, blocks_src, blocks_rank = [], [], [], []
        cold = history.matrix.getnnz(axis=1) == 0
        for index, (source, model) in enumerate(zip(self.sources_, self.models_, strict=True)):
            ranked = model.recommend(RecQuery(history, source.n, exclude=exclude))
            items, scores = ranked.items, ranked.scores
            if not model.serves_cold_users:  # an empty history gets ties from a personal model, not candidates
                items[cold] = -1
            blocks_items.append(items)
            blocks_scores.append(scores)
            blocks_src.append(np.full(items.shape, index))
            blocks_rank.append(np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape))
        items = np.hstack(blocks_items)
        rows = np.broadcast_to(np.arange(n_rows)[:, None], items.shape)
        valid = items >= 0
        rows, item, src = rows[valid], items[valid], np.hstack(blocks_src)[valid]
        score, rank = np.hstack(blocks_scores)[valid], np.hstack(blocks_rank)[valid]
        keys, slot_of = np.unique(rows.astype(np.int64) * n_items + item, return_inverse=True)
        key_rows = keys // n_items
        starts = np.searchsorted(key_rows, np.arange(n_rows))
        position = np.arange(len(keys)) - starts[key_rows]
        width = int(position.max(initial=-1)) + 1
        merged = np.full((n_rows, width), -1, dtype=np.int64)
        merged[key_rows, position] = keys % n_items
        n_sources = len(self.sources_)
        scores_out = np.full((n_rows, width, n_sources), np.nan)
        ranks_out = np.full((n_rows, width, n_sources), np.nan)
        scores_out[key_rows[slot_of], position[slot_of], src] = np.where(np.isfinite(score), score, np.nan)
        ranks_out[key_rows[slot_of], position[slot_of], src] = rank
        return Candidates(merged, scores_out, ranks_out, tuple(s.name for s in self.sources_))
