"""Adding a model is its module and one registry line: everything else reads what the class says.

``Tiny`` is registered here by a ``MODEL_PATHS`` line alone; tuning, the evaluation budget, explanations,
candidate generation and "similar items" all work from its class attributes, with no table to edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

import numpy as np
import pyarrow as pa
import pytest
from pydantic import BaseModel, ConfigDict

from shopsense.eval.budget import MODEL_FIXED, DataSize, model_seconds
from shopsense.eval.harness import EvalConfig, Task
from shopsense.eval.tuning import GRIDS, tune_model, validation
from shopsense.features.interactions import Interactions
from shopsense.models.base import Evidence, Recommender
from shopsense.models.registry import MODEL_PATHS, MODELS, build_model, config_class
from shopsense.pipeline import Pipeline, PipelineConfig
from shopsense.ranking.reasons import evidence_groups


class TinyConfig(BaseModel):
    """One hyperparameter, so that a grid has something to vary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lowest_first: bool = True


class Tiny(Recommender):
    """Every user gets the catalogue in index order (or reversed): a known answer everywhere."""

    config: TinyConfig
    evidence = "goes_with"
    similar_items_rank = -1  # asked before item-kNN
    tuning_grid = ({"lowest_first": True}, {"lowest_first": False})
    fit_per_million = 3.0
    rank_per_billion = 0.0

    def __init__(self, config: TinyConfig | None = None) -> None:
        self.config = config or TinyConfig()

    @classmethod
    def adjust_estimate(cls, seconds: float, n_items: int, params: Mapping[str, Any]) -> float:
        return seconds + n_items if params.get("lowest_first") is False else seconds

    def _fit(self, data: Interactions) -> None:
        pass

    def _score(self, history: Interactions) -> np.ndarray:
        order = -np.arange(self.n_items_, dtype=float)
        return np.tile(order if self.config.lowest_first else -order, (history.matrix.shape[0], 1))


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> str:
    """``Tiny`` registered the way a real model is: one line, "module:Class"."""
    monkeypatch.setitem(MODEL_PATHS, "tiny", f"{__name__}:Tiny")
    return "tiny"


@pytest.mark.parametrize("name", sorted(MODEL_PATHS))
def test_every_registered_class_states_valid_facts(name: str) -> None:
    cls = MODELS[name]
    assert cls.tuning_grid and all(config_class(name).model_validate(point) for point in cls.tuning_grid)
    assert cls.fit_per_million > 0 and cls.rank_per_billion > 0
    assert cls.evidence in get_args(Evidence)
    ranks = [MODELS[other].similar_items_rank for other in MODEL_PATHS]
    assert cls.similar_items_rank is None or ranks.count(cls.similar_items_rank) == 1, "one order, no ties"


def test_the_registry_lists_names_and_builds_models_from_the_line_alone(tiny: str) -> None:
    assert tiny in MODELS and MODELS[tiny] is Tiny
    assert build_model(tiny, {"lowest_first": False}).config == TinyConfig(lowest_first=False)


def test_tuning_tries_the_grid_on_the_class(tiny: str, shop_tables: tuple[pa.Table, pa.Table]) -> None:
    assert GRIDS[tiny] == [{"lowest_first": True}, {"lowest_first": False}]
    assert GRIDS.get("not_registered", [{}]) == [{}], "a name not registered runs with its defaults"
    events, catalog = shop_tables
    valid = validation(events, EvalConfig(bootstrap=100, tasks=(Task.ALL,)), catalog)
    trials = tune_model(valid, tiny, Task.ALL)
    assert sorted(trial.params["lowest_first"] for trial in trials) == [False, True]


def test_the_budget_estimates_from_the_class_constants(tiny: str) -> None:
    size = DataSize(interactions=2_000_000, users=10, items=100, test_users=10, tasks=1)
    assert model_seconds(tiny, size) == pytest.approx(MODEL_FIXED + 6.0)
    assert model_seconds(tiny, size, {"lowest_first": False}) == pytest.approx(MODEL_FIXED + 6.0 + 100)


def test_explanations_read_the_evidence_of_the_class(tiny: str) -> None:
    groups = evidence_groups(("score_t", "rank_t", "item_users", "score_other"), {"t": tiny, "other": "nope"})
    assert groups == ["goes_with", "goes_with", "popular", "taste"]


def test_similar_items_ask_the_sources_in_the_order_their_classes_give(
    tiny: str, shop: Interactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "ranker": {
            "boost": {"max_trees": 10},
            "candidates": {"sources": [{"name": "knn", "model": "item_knn"}, {"name": "t", "model": tiny, "n": 20}]},
        },
        "rules": {"exclude_unavailable": False, "exclude_kinds": [], "collapse_variants": False},
    }
    pipeline = Pipeline(PipelineConfig.model_validate(config)).fit(shop)
    item = shop.items.values[5]
    assert [i for i, _ in pipeline.similar(item, 4)] == shop.items.values[:4]
    knn = [shop.items.values[i] for i in pipeline.ranker.generator_.models_[0].similar_items(np.array([5]), 4).items[0]]
    assert knn != shop.items.values[:4]
    monkeypatch.setattr(Tiny, "similar_items_rank", None)  # now it cannot answer: item-kNN does
    assert [i for i, _ in pipeline.similar(item, 4)] == knn
