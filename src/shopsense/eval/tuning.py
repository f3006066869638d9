"""Small, honest hyper-parameter search: every choice is made on a validation split of the training period.

The validation split is the evaluation's own protocol applied again to the training events,
so the test period is never looked at. Grids are deliberately small (a few points per
model): enough to adapt to a dataset, cheap enough to run for every model and every peer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from shopsense.eval.harness import EvalConfig, Prepared, Task, evaluate_model, prepare
from shopsense.eval.splits import validation_config
from shopsense.models.registry import MODELS, build_model


class _Grids(Mapping[str, list[dict[str, Any]]]):
    """Each registered model's ``tuning_grid``, read from its class (imported when looked up)."""

    def __getitem__(self, name: str) -> list[dict[str, Any]]:
        return [dict(point) for point in MODELS[name].tuning_grid]

    def __contains__(self, name: object) -> bool:  # Mapping's own would import the class
        return name in MODELS

    def __iter__(self) -> Iterator[str]:
        return iter(MODELS)

    def __len__(self) -> int:
        return len(MODELS)


GRIDS: Mapping[str, list[dict[str, Any]]] = _Grids()
"""Candidate parameters per model name (each a fresh copy); a name not registered gets nothing, so
``GRIDS.get(name, [{}])`` runs it with its defaults."""

WEIGHT_SCHEMES: dict[str, dict[str, float]] = {
    "graded": {},  # the settings' event-type weights
    "uniform": {"view": 1.0, "click": 1.0, "favourite": 1.0, "cart": 1.0, "purchase": 1.0, "rating": 1.0},
    "purchase-heavy": {"view": 1.0, "click": 1.0, "favourite": 3.0, "cart": 5.0, "purchase": 20.0, "rating": 5.0},
}
"""Interaction weightings tried per dataset; ``return`` keeps the settings' (negative) weight."""

HALF_LIVES: tuple[float | None, ...] = (None, 180.0, 30.0)
INTERACTION_TRIALS = len(WEIGHT_SCHEMES) * len(HALF_LIVES)
"""Probe fits of :func:`tune_interactions` at most."""
SLOW_TRIAL_SECONDS = 300.0
"""A grid point slower than this ends the search (the points tried so far compete): a grid of slow fits
would take longer than the evaluation itself."""


@dataclass(frozen=True)
class Trial:
    """One point of a search and its validation NDCG@10."""

    params: dict[str, Any]
    ndcg10: float
    seconds: float = float("nan")


def validation(train: pa.Table, config: EvalConfig, catalog: pa.Table | None = None) -> Prepared:
    """The evaluation protocol applied to the training events only (other pairs for a random split)."""
    return prepare(train, config.model_copy(update={"split": validation_config(config.split)}), catalog)


def tune_model(
    valid: Prepared,
    name: str,
    task: Task,
    grid: list[dict[str, Any]] | None = None,
    *,
    seconds: float | None = None,
) -> list[Trial]:
    """The grid points of ``name`` scored on the validation split, best first.

    The search stops early, keeping the points tried, when a point took longer than
    ``SLOW_TRIAL_SECONDS`` or another like it would end past ``seconds`` from the start.
    """
    points = grid if grid is not None else GRIDS.get(name, [{}])
    trials: list[Trial] = []
    started = time.perf_counter()
    for params in tqdm(points, desc=f"tune {name}", unit="config", leave=False, disable=None):
        began = time.perf_counter()
        result = evaluate_model(valid, name, build_model(name, params))
        took = time.perf_counter() - began
        trials.append(Trial(params, result.tasks[task].metrics["ndcg@10"], took))
        out_of_time = seconds is not None and time.perf_counter() - started + took > seconds
        if len(trials) < len(points) and (took > SLOW_TRIAL_SECONDS or out_of_time):
            break
    return sorted(trials, key=lambda t: -t.ndcg10)


def tune_interactions(
    train: pa.Table, config: EvalConfig, task: Task, probe: str = "item_knn", catalog: pa.Table | None = None
) -> list[Trial]:
    """Event-type weights x time decay, judged by a fast probe model on the validation split, best first."""
    present = set(train.column("type").unique().to_pylist())
    trials, tried = [], set()
    for scheme, weights in WEIGHT_SCHEMES.items():
        merged = {**config.weights, **weights}
        effective = tuple(sorted((t, w) for t, w in merged.items() if t in present))
        if effective in tried:  # e.g. purchases-only data: every scheme weighs it the same way
            continue
        tried.add(effective)
        for half_life in HALF_LIVES:
            trial_config = config.model_copy(update={"weights": merged, "half_life_days": half_life})
            result = evaluate_model(validation(train, trial_config, catalog), probe, build_model(probe))
            trials.append(
                Trial(
                    {"scheme": scheme, "weights": merged, "half_life_days": half_life},
                    result.tasks[task].metrics["ndcg@10"],
                )
            )
    return sorted(trials, key=lambda t: -t.ndcg10)
