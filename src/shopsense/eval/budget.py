"""How long an evaluation will take, and a wall-clock budget it must keep.

Estimates are rough on purpose (within a factor of a few): per model, seconds per million
training interactions for the fit, plus seconds per billion (user, item) scores for ranking
the whole catalogue, times the tuning grid. Each model's constants are on its class
(:class:`~shopsense.models.base.Recommender`'s ``fit_per_million`` and ``rank_per_billion``), measured with
``shopsense generate`` data on 2 cores (500k events, 8k users, 4k items); its ``adjust_estimate`` adds
what they miss (EASE the cube of its item count at this machine's measured speed,
:func:`shopsense.models.ease.inverse_seconds_per_cube`).
A model whose estimate does not fit what is left of the budget is skipped with that reason;
EASE and SASRec are also given the time left (``max_minutes``) so that a started fit ends in it.
Other steps are not stopped once started: a run ends past its budget by as much as the estimate of
its last step was short (on a machine busy with other work, estimates run low).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shopsense.eval.harness import Prepared
from shopsense.models.base import Recommender
from shopsense.models.registry import MODELS

RANK_DEFAULT = Recommender.rank_per_billion
"""Seconds per billion (test user, item) scores of the pipeline's final ranking: a typical model's."""
PIPELINE_PER_MILLION = 900.0
"""The two-stage pipeline: its sources fitted twice, pair features and the LightGBM heads."""
PIPELINE_FIXED = 2.0
MODEL_FIXED = 0.05
VALIDATION_SHARE = 0.8
"""A validation fit sees the training period less its own test stretch."""


@dataclass(frozen=True)
class DataSize:
    """The figures estimates scale with."""

    interactions: int
    users: int
    items: int
    test_users: int
    tasks: int

    @classmethod
    def of(cls, prepared: Prepared) -> DataSize:
        """The sizes of a prepared split."""
        return cls(
            int(prepared.data.matrix.nnz),
            int(prepared.data.matrix.shape[0]),
            int(prepared.data.matrix.shape[1]),
            len(prepared.users),
            len(prepared.config.tasks),
        )

    @property
    def scores(self) -> float:
        """(test user, item) scores per evaluation of one model: every task ranks the whole catalogue."""
        return float(self.test_users) * self.items * self.tasks


def model_seconds(name: str, size: DataSize, params: dict[str, Any] | None = None) -> float:
    """One fit and one scoring of model ``name`` on data of ``size``, from its class's cost constants
    (``fit_per_million``, ``rank_per_billion``, ``adjust_estimate``; the class is imported). A name not
    registered, which its fit will refuse with its own message, costs what a typical model does."""
    model = MODELS.get(name, Recommender)
    seconds = MODEL_FIXED + model.fit_per_million * size.interactions / 1e6
    seconds += model.rank_per_billion * size.scores / 1e9
    return model.adjust_estimate(seconds, size.items, params or {})


def pipeline_seconds(size: DataSize, choosing: bool = False) -> float:
    """One fit and one scoring of the two-stage pipeline; ``choosing``: with its settings first chosen on a
    validation split (:mod:`shopsense.eval.choice`: a few label cuts, its sources alone, maybe one more)."""
    once = PIPELINE_FIXED + PIPELINE_PER_MILLION * size.interactions / 1e6 + RANK_DEFAULT * size.scores / 1e9
    return once * (1 + VALIDATION_SHARE * CHOICE_TRIALS) if choosing else once


CHOICE_TRIALS = 5
"""Pipeline fits a choice makes on the validation split, typically (its sources alone cost about one more)."""


def with_tuning(seconds: float, points: int) -> float:
    """A model's cost when ``points`` grid points are first scored on the validation split."""
    return seconds * (1 + VALIDATION_SHARE * points) if points > 1 else seconds


class Budget:
    """A wall-clock allowance for a whole run (``None``: no limit), started when made."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._start = clock()

    def spent(self) -> float:
        """Seconds since the run started."""
        return self._clock() - self._start

    def left(self) -> float:
        """Seconds still allowed (infinite without a limit)."""
        return float("inf") if self.seconds is None else self.seconds - self.spent()

    def refuses(self, estimate: float) -> str | None:
        """Why a step estimated at ``estimate`` seconds may not start now, or None when it fits."""
        left = self.left()
        if estimate <= left:
            return None
        total = duration(self.seconds or 0)
        return f"skipped: needs ~{duration(estimate)}, {duration(max(left, 0.0))} of the {total} budget left"


def duration(seconds: float) -> str:
    """``42s``, ``3.5m`` or ``1.2h``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
