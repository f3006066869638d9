"""Splits: no training event at or after what it must predict; cold users reported apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from shopsense.eval.splits import Protocol, SplitConfig, split, validation_config
from tests.conftest import events_table

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _events(rows: list[tuple[str, str, str, int]]) -> pa.Table:
    return events_table([(u, i, t, T0 + timedelta(days=d)) for u, i, t, d in rows])


EVENTS = _events(
    [
        ("a", "i1", "view", 0),
        ("a", "i1", "purchase", 1),
        ("b", "i2", "view", 2),
        ("a", "i2", "view", 3),
        ("b", "i3", "purchase", 4),
        ("a", "i3", "purchase", 5),
        ("b", "i1", "view", 6),
        ("b", "i4", "purchase", 7),
        ("c", "i4", "purchase", 8),  # c appears only in the test period
        ("a", "i5", "view", 9),
    ]
)


def test_temporal_split_by_hand() -> None:
    result = split(EVENTS, SplitConfig(test_quantile=0.7))
    assert result.cutoff == T0 + timedelta(days=6)
    assert max(result.train.column("timestamp").to_pylist()) < result.cutoff
    assert result.test.column("item_id").to_pylist() == ["i4"]  # b's purchase; a's day-9 view is not a target
    assert result.cold.column("user_id").to_pylist() == ["c"]
    assert "1 cold-start test events" in result.description


def test_leave_last_k_split_by_hand() -> None:
    result = split(EVENTS, SplitConfig(protocol=Protocol.LEAVE_LAST, last_k=1))
    held = {(r["user_id"], r["item_id"]) for r in result.test.to_pylist()}
    assert held == {("a", "i3"), ("b", "i4")}
    train = result.train.to_pylist()
    assert all(r["timestamp"] < T0 + timedelta(days=5) for r in train if r["user_id"] == "a")
    assert ("a", "i5") not in {(r["user_id"], r["item_id"]) for r in train}, "nothing after the held-out event"
    assert result.cold.column("user_id").to_pylist() == ["c"]


def test_random_split_keeps_a_pair_on_one_side_and_is_seeded() -> None:
    rows = [(f"u{u}", f"i{i}", kind, u + i) for u in range(30) for i in range(10) for kind in ("view", "purchase")]
    events = _events(rows)
    config = SplitConfig(protocol=Protocol.RANDOM, test_fraction=0.3, seed=1)
    result = split(events, config)
    held = {(r["user_id"], r["item_id"]) for r in result.test.to_pylist()}
    trained = {(r["user_id"], r["item_id"]) for r in result.train.to_pylist()}
    assert not held & trained, "a pair's view and purchase stay on the same side"
    assert 0.2 < len(held) / 300 < 0.4
    assert held == {(r["user_id"], r["item_id"]) for r in split(events, config).test.to_pylist()}
    other = split(events, config.model_copy(update={"seed": 2}))
    assert held != {(r["user_id"], r["item_id"]) for r in other.test.to_pylist()}


def test_validation_never_sees_the_test_period() -> None:
    config = SplitConfig(test_quantile=0.7)
    outer = split(EVENTS, config)
    inner = split(outer.train, validation_config(config))
    assert inner.cutoff is not None and outer.cutoff is not None and inner.cutoff < outer.cutoff
    assert max(inner.test.column("timestamp").to_pylist(), default=T0) < outer.cutoff


def test_empty_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no events"):
        split(EVENTS.slice(0, 0), SplitConfig())


def test_random_validation_split_holds_out_other_pairs() -> None:
    rows = [(f"u{u}", f"i{i}", "rating", u + i) for u in range(30) for i in range(10)]
    config = SplitConfig(protocol=Protocol.RANDOM, test_fraction=0.2, target_types=("rating",))
    outer = split(_events(rows), config)
    inner = split(outer.train, validation_config(config))
    assert inner.test.num_rows > 0, "the test's seed would pick only pairs already held out"
    held = {(r["user_id"], r["item_id"]) for r in outer.test.to_pylist()}
    assert not held & {(r["user_id"], r["item_id"]) for r in inner.test.to_pylist()}


def test_tuning_validates_a_random_split_on_other_pairs() -> None:
    from shopsense.eval.harness import EvalConfig, Task
    from shopsense.eval.tuning import validation

    rows = [(f"u{u}", f"i{i}", "rating", u + i) for u in range(30) for i in range(10)]
    config = SplitConfig(protocol=Protocol.RANDOM, test_fraction=0.2, target_types=("rating",))
    outer = split(_events(rows), config)
    prepared = validation(outer.train, EvalConfig(split=config, tasks=(Task.ALL,)))
    assert prepared.split.test.num_rows > 0, "tuning on a random split once held out nothing (the test's seed)"
