"""The pipeline's choice on validation: each label cut once, the best kept, an extra source, the guard, the budget."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from shopsense.eval import choice as choice_module
from shopsense.eval.choice import choose, label_variants, training_choice
from shopsense.eval.harness import EvalConfig, ModelResult, Task, TaskResult, prepare
from shopsense.eval.splits import Protocol, SplitConfig
from shopsense.models.base import Recommender
from shopsense.pipeline import ChoiceConfig, PipelineConfig
from shopsense.ranking.ranker import RankerConfig, TwoStage
from shopsense.settings import DEFAULT_EVENT_TYPES


def test_label_variants_try_each_cut_once() -> None:
    ranker = RankerConfig()  # time window, 15% of the events
    temporal = label_variants(ranker, SplitConfig(protocol=Protocol.TEMPORAL, test_quantile=0.9))
    assert [name for name, _, _ in temporal] == ["configured", "last purchase"], "a time window is a time window"
    last10 = label_variants(ranker, SplitConfig(protocol=Protocol.LEAVE_LAST, last_k=10))
    assert [u for _, _, u in last10][1] == {"label_mode": "last", "label_last": 10}
    last1 = label_variants(ranker, SplitConfig(protocol=Protocol.LEAVE_LAST, last_k=1))
    assert [name for name, _, _ in last1] == ["configured", "labels like validation"]
    random = label_variants(ranker, SplitConfig(protocol=Protocol.RANDOM, test_fraction=0.2))
    assert random[1][2] == {"label_mode": "random", "label_fraction": 0.2}


def test_rank_by_must_name_a_source() -> None:
    with pytest.raises(ValueError, match="'nope' is not a candidate source"):
        RankerConfig(rank_by="nope")
    assert RankerConfig(rank_by="co_bought").rank_by == "co_bought"


def _scripted(monkeypatch: pytest.MonkeyPatch, scores: dict[str, float], noise: float = 0.0) -> list[Any]:
    """evaluate_model replaced by fixed validation scores per model (the pipeline by its label mode and sources)."""
    fitted: list[Any] = []

    def fake(prepared: Any, name: str, model: Recommender, **_: Any) -> ModelResult:
        fitted.append(model)
        if isinstance(model, TwoStage):
            cfg = model.config
            mode = f"last{cfg.label_last}" if cfg.label_mode == "last" else cfg.label_mode
            key = f"rank:{cfg.rank_by}" if cfg.rank_by else f"{mode}+{len(cfg.candidates.sources)}"
        else:
            key = name
        value = scores[key]
        spread = np.random.default_rng(len(fitted)).normal(0, noise, 10)
        task = TaskResult(10, {"ndcg@10": value}, (value - 0.01, value + 0.01), value + spread - spread.mean())
        return ModelResult(name, False, 0.1, 1.0, {}, {Task.NEW: task})

    monkeypatch.setattr(choice_module, "evaluate_model", fake)
    return fitted


class _Valid:
    """What choose() reads of a prepared split: the split's protocol and description, its size, and each
    user's training events (4: session-short, ``long``: 20)."""

    def __init__(self, long: bool = False) -> None:
        self.config = EvalConfig(split=SplitConfig(protocol=Protocol.LEAVE_LAST, last_k=3))
        train = pa.table({"user_id": np.repeat(np.arange(50), 20 if long else 4).astype(str)})
        self.split = type("S", (), {"description": "leave-last-3", "train": train})()
        self.data = type("D", (), {"matrix": type("M", (), {"nnz": 1000, "shape": (50, 40)})()})()
        self.users = np.arange(50)


BASE = {
    "trending": 0.05,
    "repeat": 0.01,
    "co_bought": 0.12,
    "taste": 0.10,
    "ease": 0.08,
    "similar_users": 0.09,
    "blend": 0.11,
    "sequence": 0.07,
}


def test_the_best_label_cut_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted(monkeypatch, {**BASE, "time+4": 0.10, "last3+4": 0.20, "last1+4": 0.12})
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert result.chosen == "labels like validation" and result.ranker.label_mode == "last"
    assert result.ranker.label_last == 3 and result.ranker.rank_by is None
    assert "0.2000" in result.why and "next best last purchase 0.1200" in result.why
    assert json.loads(json.dumps(result.as_dict()))["settings"]["label_last"] == 3


def test_a_gain_within_noise_keeps_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted(monkeypatch, {**BASE, "time+4": 0.20, "last3+4": 0.22, "last1+4": 0.12}, noise=0.3)
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert result.chosen == "configured" and result.ranker == RankerConfig()
    assert "next best labels like validation 0.2200" in result.why


def test_a_model_better_than_every_source_joins_them(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = {**BASE, "ease": 0.30, "time+4": 0.25, "last3+4": 0.2, "last1+4": 0.2, "time+5": 0.32}
    _scripted(monkeypatch, scores)
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert result.chosen == "+ease"
    assert [s.model for s in result.ranker.candidates.sources][-1] == "ease"


def test_the_guard_ranks_by_a_source_that_beats_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = {
        **BASE,
        "co_bought": 0.40,
        "time+4": 0.25,
        "last3+4": 0.2,
        "last1+4": 0.2,
        "rank:co_bought": 0.39,
    }
    _scripted(monkeypatch, scores)
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert result.chosen == "rank by co_bought" and result.ranker.rank_by == "co_bought"
    assert result.ranker.label_mode == "time", "on top of the best label cut"


def test_a_spent_budget_skips_trials_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    fitted = _scripted(monkeypatch, {**BASE, "time+4": 0.25})
    clock = iter(np.arange(0.0, 1000.0, 3.0))
    monkeypatch.setattr(choice_module.time, "perf_counter", lambda: float(next(clock)))
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig(budget_seconds=4))  # type: ignore[arg-type]
    assert len(fitted) == 1 and result.chosen == "configured"
    assert result.skipped and all("left" in why for why in result.skipped)


def test_train_validates_on_the_latest_events(shop_tables: tuple[pa.Table, pa.Table]) -> None:
    events, items = shop_tables
    config = PipelineConfig(choice=ChoiceConfig(validation_share=0.2))
    result = training_choice(events, items, dict(DEFAULT_EVENT_TYPES), config, Task.ALL)
    assert result.validation.startswith("temporal") and "q=0.8" in result.validation
    scored = [t for t in result.trials if t.error is None]
    assert len(scored) >= 3 and result.sources
    held = prepare(events, EvalConfig(split=SplitConfig(test_quantile=0.8), tasks=(Task.ALL,)), items)
    assert held.split.train.num_rows < events.num_rows, "the validation test is cut from the training events"
    off = training_choice(events, items, {}, PipelineConfig(choice=ChoiceConfig(enabled=False)), Task.ALL)
    assert off.chosen == "configured" and not off.trials and off.ranker == config.ranker


def _no_budget_for(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """The pipeline trials ``names`` find the budget spent (skipped, as the budget skips them); others run."""
    measure = choice_module._Trials.pipeline

    def spent(self: Any, name: str, why: str, update: dict[str, Any], extra: str | None = None) -> None:
        if name in names:
            self.skipped.append(f"{name}: needs ~1s, 0.0s of 10m left")
            return
        measure(self, name, why, update, extra)

    monkeypatch.setattr(choice_module._Trials, "pipeline", spent)


def test_the_guard_holds_even_when_no_budget_is_left_to_measure_it(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = {**BASE, "co_bought": 0.40, "time+4": 0.25, "last3+4": 0.2, "last1+4": 0.2}
    _scripted(monkeypatch, scores)
    _no_budget_for(monkeypatch, "rank by co_bought")
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert result.ranker.rank_by == "co_bought" and "not measured" in result.why
    assert json.loads(json.dumps(result.as_dict()))["trials"][0]["ndcg10"] == 0.25


def test_an_extra_source_the_budget_cannot_fit_into_the_pipeline_is_still_ranked_by(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SASRec alone beats everything, but fitting it twice more inside the pipeline does not fit the budget:
    what ships ranks by it (what was measured alone), with it joined to the candidates so the rank exists."""
    scores = {**BASE, "sequence": 0.45, "time+4": 0.25, "last3+4": 0.2, "last1+4": 0.2}
    _scripted(monkeypatch, scores)
    _no_budget_for(monkeypatch, "+sequence", "rank by sequence")
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert result.ranker.rank_by == "sequence" and "not measured" in result.why
    assert [s.name for s in result.ranker.candidates.sources][-1] == "sequence"
    assert result.ranker.candidates.sources[-1].params["max_minutes"] == choice_module.SEQUENCE_MINUTES


def test_the_guard_ranks_by_a_configured_source_without_adding_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extra joins only when it is what the guard ranks by: a configured source that wins costs nothing more."""
    scores = {**BASE, "co_bought": 0.40, "sequence": 0.30, "time+4": 0.25, "last3+4": 0.2, "last1+4": 0.2}
    scores["rank:co_bought"] = 0.39
    _scripted(monkeypatch, scores)
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert result.ranker.rank_by == "co_bought"
    assert [s.name for s in result.ranker.candidates.sources] == [s.name for s in RankerConfig().candidates.sources]


def test_a_source_whose_extra_is_missing_is_skipped_and_said(monkeypatch: pytest.MonkeyPatch) -> None:
    fitted = _scripted(monkeypatch, {**BASE, "time+4": 0.25, "last3+4": 0.2, "last1+4": 0.2})
    monkeypatch.setattr(choice_module, "installed", lambda module: module != "torch")
    result = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert "sequence" not in result.sources and "similar_users" in result.sources
    assert any(why.startswith("sequence alone: needs torch") and "shopsense[neural]" in why for why in result.skipped)
    assert not any(type(model).__name__ == "SASRec" for model in fitted)


def test_sequence_models_are_tried_on_session_short_histories_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted(monkeypatch, {**BASE, "time+4": 0.25, "last3+4": 0.2, "last1+4": 0.2})
    short = choose(_Valid(), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert "sequence" in short.sources
    long = choose(_Valid(long=True), RankerConfig(), Task.NEW, ChoiceConfig())  # type: ignore[arg-type]
    assert "sequence" not in long.sources and "similar_users" in long.sources
    said = "sequence alone: histories are long (half the events from users with more than 19 events"
    assert any(why.startswith(said) for why in long.skipped), long.skipped


def test_a_history_is_long_by_the_events_it_holds_not_by_the_median_user() -> None:
    """Online Retail's shape: most customers buy once, but most events come from a few with long histories."""
    users = ["once"] * 1 + [f"one{u}" for u in range(30)] + ["loyal"] * 500 + ["regular"] * 400
    assert choice_module._typical_history(pa.table({"user_id": users})) == 500
    assert choice_module._typical_history(pa.table({"user_id": pa.array([], pa.string())})) == 0


def _chains(users: int = 1500, items: int = 60, length: int = 8, seed: int = 0) -> pa.Table:
    """Short histories where order says what comes next: each user walks a fixed random cycle over the
    items (i, next[i], next[next[i]], ...), buying each, a step every two days
    (so the latest events continue histories that began before them). Co-occurrence sees a walk's
    neighbours on both sides; only order tells which one comes next."""
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(items)
    start = rng.integers(0, items, users)
    item = cycle[(start[:, None] + np.arange(length)) % items]
    seconds = rng.uniform(0, 60 * 86_400, users)[:, None] + np.arange(length) * 2 * 86_400.0
    user = np.repeat(np.arange(users), length)
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(users * length)],
            "user_id": [f"u{u}" for u in user],
            "item_id": [f"i{i}" for i in item.ravel()],
            "type": ["purchase"] * (users * length),
            "timestamp": pa.array((seconds.ravel() * 1000).astype("int64"), pa.timestamp("ms", tz="UTC")),
        }
    )


def test_on_sessions_where_order_decides_the_sequence_model_is_tried_and_guarded(torch_one_thread: None) -> None:
    """End to end on data where order predicts the next purchase: SASRec alone is measured on the
    session-short histories, beats every configured source, joins them in a measured trial, and what
    ships is not worse on validation than SASRec alone."""
    result = training_choice(_chains(), None, dict(DEFAULT_EVENT_TYPES), PipelineConfig(), Task.ALL)
    alone = {name: t.ndcg10 for name, t in result.sources.items() if t.error is None}
    assert max(alone, key=alone.__getitem__) == "sequence", alone
    assert any(t.name == "+sequence" and t.error is None for t in result.trials), result.skipped
    shipped = next(t for t in result.trials if t.name == result.chosen)
    assert shipped.ndcg10 >= alone["sequence"] or result.ranker.rank_by == "sequence", result.why
    assert "sequence" in [s.name for s in result.ranker.candidates.sources], "order is what this data is about"
