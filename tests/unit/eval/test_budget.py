"""Runs sized to the machine: EASE's items from free memory and time, a budget that skips what cannot fit,
tuning grids cut when fits are slow, and the report saying what was scaled down and why."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsense.eval import tuning
from shopsense.eval.budget import Budget, DataSize, model_seconds, pipeline_seconds
from shopsense.eval.harness import EvalConfig, Task, scaled_down
from shopsense.eval.report import to_markdown
from shopsense.ingest.synthetic import GeneratorConfig, generate
from shopsense.models import ease as ease_module
from shopsense.models.ease import EASE, EASEConfig, items_for_memory
from shopsense.pipeline import PipelineConfig
from shopsense.services.evaluation import EvaluationRun
from tests.contracts.test_models import checkerboard

CONFIG = EvalConfig(bootstrap=100, tasks=(Task.ALL,))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, pa.Table]:
    """A small generated shop (views -> carts -> purchases) where the models learn something."""
    folder = tmp_path_factory.mktemp("gen")
    generate(GeneratorConfig(users=300, items=200, events=20_000, seed=5), folder)
    return pq.read_table(folder / "events.parquet"), pq.read_table(folder / "items.parquet")


def _frozen() -> float:
    return 0.0  # a clock that never moves: the budget left is exactly what is given


def test_ease_takes_as_many_items_as_the_free_memory_holds() -> None:
    data = checkerboard()
    items = data.matrix.shape[1]
    enough = EASE(EASEConfig(memory_gib=1.0)).fit(data)
    assert len(enough.kept_) == items and enough.scaled_down_ == []
    budget = 10**2 * 8 * ease_module.MATRIX_COPIES / 0.5  # bytes for 10 items at half the free memory
    assert items_for_memory(budget * 0.5) == 10
    short = EASE(EASEConfig(memory_gib=budget / 2**30)).fit(data)
    assert len(short.kept_) == 10
    assert short.scaled_down_ == [f"ease: max_items 10 of {items} items (50% of 0.0061 MiB free memory)"]
    fixed = EASE(EASEConfig(memory_gib=budget / 2**30, max_items=15)).fit(data)
    assert len(fixed.kept_) == 15 and fixed.scaled_down_ == [], "a max_items the user set is the user's choice"


def test_ease_takes_as_many_items_as_an_inverse_in_max_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ease_module, "inverse_seconds_per_cube", lambda: 60.0 / 12**3)  # 12 items per minute
    short = EASE(EASEConfig(max_minutes=1.0, memory_gib=64.0)).fit(checkerboard())
    assert len(short.kept_) in (11, 12)  # the cube root of 12³, give or take a float
    assert "an inverse within max_minutes = 1" in short.scaled_down_[0]


def test_the_budget_skips_what_does_not_fit_and_says_why(shop: tuple[pa.Table, pa.Table]) -> None:
    events, catalog = shop
    run = EvaluationRun("gen", events, CONFIG, catalog=catalog, tune=False, budget=Budget(0.5, clock=_frozen))
    size = DataSize.of(run.prepared)
    assert model_seconds("popular", size) < 0.5 < pipeline_seconds(size), "the test needs one of each"
    report = run.run_plan(["popular"], pipelines={"default": PipelineConfig()})
    assert report["models"]["popular"]["ndcg@10"] > 0
    skipped = report["models"]["pipeline:default"]
    assert skipped["skipped"] and skipped["error"].startswith("skipped: needs ~")
    assert "0.5s of the 0.5s budget left" in skipped["error"]
    assert report["budget"]["skipped"] == ["pipeline:default"]
    assert "Not run: pipeline:default (skipped: needs" in to_markdown(report)


def test_the_default_pipeline_is_a_row_that_beats_popularity(shop: tuple[pa.Table, pa.Table]) -> None:
    events, catalog = shop
    run = EvaluationRun("gen", events, CONFIG, catalog=catalog, tune=False)
    report = run.run_plan(["popular"], pipelines={"default": PipelineConfig()})
    pipeline, popular = report["models"]["pipeline:default"], report["models"]["popular"]
    assert pipeline["error"] is None and pipeline["params"]["purchase_types"] == ["purchase"]
    assert pipeline["ndcg@10"] > popular["ndcg@10"] * 1.2, (pipeline["ndcg@10"], popular["ndcg@10"])
    assert report["estimate_seconds"]["pipeline:default"] > report["estimate_seconds"]["popular"]


def test_fixed_parameters_hold_while_the_rest_is_tuned(shop: tuple[pa.Table, pa.Table]) -> None:
    events, catalog = shop
    run = EvaluationRun("gen", events, CONFIG, catalog=catalog, params={"ease": {"max_items": 50}})
    result = run.add_model("ease")
    assert result.params["max_items"] == 50 and result.params["l2"] in (50.0, 250.0, 1000.0)
    assert [t.params["max_items"] for t in run.tuning["ease"]] == [50, 50, 50]


def test_slow_fits_cut_the_tuning_grid(shop: tuple[pa.Table, pa.Table], monkeypatch: pytest.MonkeyPatch) -> None:
    events, catalog = shop
    monkeypatch.setattr(tuning, "SLOW_TRIAL_SECONDS", 0.0)  # every fit counts as slow
    run = EvaluationRun("gen", events, CONFIG, catalog=catalog, defer_tuning=True)
    run.add_model("item_knn")
    assert len(run.tuning["item_knn"]) == 1
    report = run.report()
    assert any(note.startswith("item_knn: tuning grid cut to 1 of 4 points") for note in report["scaled_down"])


def test_a_budget_too_short_for_tuning_fits_once_and_says_so(shop: tuple[pa.Table, pa.Table]) -> None:
    events, catalog = shop
    run = EvaluationRun("gen", events, CONFIG, catalog=catalog, defer_tuning=True)
    once = model_seconds("als", DataSize.of(run.prepared))
    run.budget = Budget(2 * once, clock=_frozen)  # one fit fits, a 3-point grid (~3.4 fits) does not
    assert run.estimate([], [], [])["interaction weights"] > 2 * once, "the test needs this"
    run.tune_interactions()
    run.add_model("als")
    report = run.report()
    assert "als" not in report["tuning"] and report["models"]["als"]["ndcg@10"] is not None
    assert any(note.startswith("als: not tuned (its 3-point grid needs ~") for note in report["scaled_down"])
    assert any(note.startswith("interaction weights not tuned") for note in report["scaled_down"])


def test_a_time_limited_model_gets_a_share_of_the_time_left(shop: tuple[pa.Table, pa.Table]) -> None:
    events, catalog = shop
    run = EvaluationRun("gen", events, CONFIG, catalog=catalog, tune=False, budget=Budget(600.0, clock=_frozen))
    assert run._time_limit("sasrec") == (
        {"max_minutes": 5.0},
        "sasrec: max_minutes 30 -> 5 (half the 10.0m left of the budget)",
    )
    assert run._time_limit("ease")[1] is None, "EASE reports its own sizing"
    assert run._time_limit("popular") == ({}, None)
    run.fixed = {"sasrec": {"max_minutes": 20.0}}
    assert run._time_limit("sasrec") == ({}, None), "the user's own limit stands"


def test_what_a_pipeline_or_hybrid_scaled_down_is_found_inside_it() -> None:
    class Fitted:
        def __init__(self, notes: list[str], **inner: object) -> None:
            self.scaled_down_ = notes
            self.__dict__.update(inner)

    ease = Fitted(["ease: max_items 10 of 20 items"])
    generator = Fitted([], models_=[Fitted([]), ease])
    pipeline = Fitted([], generator_=generator)
    assert scaled_down(pipeline) == ["ease: max_items 10 of 20 items"]
    assert scaled_down(Fitted(["own"], parts_=[ease, ease])) == ["own", "ease: max_items 10 of 20 items"]
