"""The harness by hand: truth per task, unknown items as misses, cold users apart, lists checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from shopsense.errors import ShopsenseError
from shopsense.eval.harness import EvalConfig, Task, compare, evaluate_lists, evaluate_model, prepare
from shopsense.eval.report import build_report, to_markdown
from shopsense.eval.splits import SplitConfig
from shopsense.models.registry import build_model
from tests.conftest import events_table

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _events(rows: list[tuple[str, str, str, int]]) -> pa.Table:
    return events_table([(u, i, t, T0 + timedelta(days=d)) for u, i, t, d in rows])


EVENTS = _events(
    [
        ("a", "x", "purchase", 0),
        ("a", "y", "purchase", 1),
        ("b", "y", "purchase", 2),
        ("b", "z", "view", 3),
        ("c", "x", "purchase", 4),
        # test period (day >= 8 with q=0.6 over these 10 events)
        ("a", "x", "purchase", 8),  # a re-buys x: a hit only in task "all"
        ("a", "w", "purchase", 9),  # w never seen in training: a miss everyone shares
        ("b", "x", "purchase", 9),  # new for b
        ("c", "x", "purchase", 9),  # c only re-buys: no "new" truth, left out of that task
        ("d", "y", "purchase", 9),  # d is cold
    ]
)
CONFIG = EvalConfig(split=SplitConfig(test_quantile=0.55), bootstrap=200)


def test_truth_per_task_by_hand() -> None:
    prepared = prepare(EVENTS, CONFIG)
    users = prepared.data.users.ids(prepared.users.tolist())
    assert users == ["a", "b", "c"]
    assert prepared.unknown_test_items == 1
    assert prepared.truth.shape == (3, 3 + 1)  # x, y, z + the unknown w
    assert prepared.truth.toarray().sum(axis=1).tolist() == [2, 1, 1]
    new_users = [users[u] for u in prepared.task_users[Task.NEW]]
    assert new_users == ["a", "b"]  # c bought nothing new
    assert prepared.task_truth[Task.NEW].toarray().sum(axis=1).tolist() == [1, 1]  # a: only w; b: x
    assert prepared.cold.users.values == ["d"]


def test_scores_of_known_lists() -> None:
    prepared = prepare(EVENTS, CONFIG)
    x = prepared.data.items.index(["x"])[0]
    y = prepared.data.items.index(["y"])[0]
    perfect_all = np.array([[x, -1], [x, -1], [x, -1]])  # a: 1 of 2 relevant (w unreachable); b, c: all
    result = evaluate_lists(prepared, "m", {Task.ALL: perfect_all, Task.NEW: np.array([[y, -1], [x, y]])})
    assert result.tasks[Task.ALL].metrics["recall@10"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert result.tasks[Task.ALL].metrics["hit_rate@10"] == 1.0
    assert result.tasks[Task.NEW].metrics["mrr@10"] == pytest.approx((0 + 1) / 2)
    with pytest.raises(ValueError, match="2 lists for 3 users"):
        evaluate_lists(prepared, "bad", {Task.ALL: perfect_all[:2]})


def test_models_are_scored_and_compared_with_a_report() -> None:
    prepared = prepare(EVENTS, CONFIG)
    results = [evaluate_model(prepared, name, build_model(name)) for name in ("popular", "repeat_buy")]
    compare(results)
    repeat = results[1].tasks[Task.ALL]
    assert repeat.metrics["hit_rate@10"] == 1.0, "every warm user re-bought or bought something popular"
    assert {r.tasks[Task.ALL].p_vs_best is None for r in results} == {True, False}
    assert results[0].cold["ndcg@10"] > 0, "popular reaches the cold user"
    report = build_report("tiny", prepared, results, Task.ALL)
    assert report["models"]["repeat_buy"]["peer"] is False
    assert report["cold_start"]["users"] == 1
    text = to_markdown(report)
    assert "**repeat_buy**" in text and "Task `new`" in text


def test_a_split_with_no_warm_test_user_is_refused() -> None:
    cold_only = _events([("a", "x", "purchase", 0), ("b", "x", "purchase", 9)])
    with pytest.raises(ShopsenseError, match="no test user with a training history"):
        prepare(cold_only, EvalConfig(split=SplitConfig(test_quantile=0.5)))
