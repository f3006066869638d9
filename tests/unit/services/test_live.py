"""LiveHistories: the loaded events plus every appended one, per user, against a plain-list model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from shopsense.services.live import LiveHistories

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Row = tuple[str, str, str, int]


def table(rows: list[Row]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.string()),
            "item_id": pa.array([r[1] for r in rows], pa.string()),
            "type": pa.array([r[2] for r in rows], pa.string()),
            "timestamp": pa.array([T0 + timedelta(seconds=r[3]) for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def rows_of(history: pa.Table) -> list[Row]:
    return [
        (r["user_id"], r["item_id"], r["type"], int((r["timestamp"] - T0).total_seconds())) for r in history.to_pylist()
    ]


def test_history_is_loaded_events_by_time_then_appended_ones_in_arrival_order() -> None:
    live = LiveHistories(table([("b", "i1", "view", 5), ("a", "i2", "view", 2), ("b", "i3", "cart", 1)]))
    live.append(table([("b", "i9", "purchase", 10), ("c", "i1", "view", 11), ("b", "i8", "view", 3)]))
    assert rows_of(live.history("b")) == [
        ("b", "i3", "cart", 1),
        ("b", "i1", "view", 5),
        ("b", "i9", "purchase", 10),
        ("b", "i8", "view", 3),
    ]
    assert live.count("b") == 4 and live.count("c") == 1 and live.count("nobody") == 0
    assert live.history("nobody").num_rows == 0


def test_version_moves_with_each_commit_holding_the_user_and_with_erasure() -> None:
    live = LiveHistories(table([("a", "i1", "view", 1)]))
    assert live.version("a") == 0
    live.append(table([("a", "i2", "view", 2), ("a", "i3", "view", 3)]))
    assert live.version("a") == 1
    live.append(table([("b", "i2", "view", 2)]))
    assert live.version("a") == 1
    live.erase("a")
    assert live.version("a") == 2 and live.count("a") == 0 and live.history("a").num_rows == 0


def test_erasure_keeps_everyone_else_and_drops_the_user_from_popular() -> None:
    live = LiveHistories(table([("a", "x", "view", 1), ("a", "x", "view", 2), ("b", "y", "view", 3)]))
    live.append(table([("a", "x", "view", 4), ("c", "y", "view", 5)]))
    assert live.popular(None, 2) == ["x", "y"]
    live.erase("a")
    assert rows_of(live.history("b")) == [("b", "y", "view", 3)]
    assert rows_of(live.history("c")) == [("c", "y", "view", 5)]
    assert live.popular(None, 5) == ["y"]


def test_popular_counts_only_events_since_the_given_time() -> None:
    live = LiveHistories(table([("a", "old", "view", 1), ("a", "old", "view", 2), ("b", "new", "view", 50)]))
    live.append(table([("c", "new", "view", 60), ("c", "old", "view", 5)]))
    since = pa.scalar(T0 + timedelta(seconds=40), pa.timestamp("us", tz="UTC"))
    assert live.popular(since, 5) == ["new"]
    assert live.popular(None, 1) == ["old"]


operations = st.lists(
    st.one_of(
        st.lists(
            st.tuples(
                st.sampled_from("abcde"),
                st.sampled_from(["i1", "i2", "i3"]),
                st.sampled_from(["view", "cart"]),
                st.integers(0, 100),
            ),
            min_size=1,
            max_size=6,
        ),
        st.sampled_from("abcde"),  # an erasure
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    loaded=st.lists(st.tuples(st.sampled_from("abc"), st.just("i1"), st.just("view"), st.integers(0, 100))),
    steps=operations,
)
def test_any_sequence_of_commits_and_erasures_matches_a_plain_list_per_user(
    loaded: list[Row], steps: list[list[Row] | str]
) -> None:
    live = LiveHistories(table(loaded))
    base = {u: [r for r in loaded if r[0] == u] for u in "abcde"}
    tail: dict[str, list[Row]] = {u: [] for u in "abcde"}
    seen = {r[0] for r in loaded}
    for step in steps:
        before = {u: live.version(u) for u in "abcde"}
        if isinstance(step, str):  # erasing a user never seen has nothing to invalidate
            live.erase(step)
            base[step], tail[step] = [], []
            touched = {step} & seen
        else:
            live.append(table(step))
            for row in step:
                tail[row[0]].append(row)
            touched = {r[0] for r in step}
            seen |= touched
        assert {u for u in "abcde" if live.version(u) != before[u]} == touched
        assert all(live.version(u) >= before[u] for u in "abcde")
    for user in "abcde":
        got = rows_of(live.history(user))
        loaded_part, appended_part = got[: len(base[user])], got[len(base[user]) :]
        assert sorted(loaded_part) == sorted(base[user])
        assert [r[3] for r in loaded_part] == sorted(r[3] for r in loaded_part)
        assert appended_part == tail[user]
        assert live.count(user) == len(base[user]) + len(tail[user])
