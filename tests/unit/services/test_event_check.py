"""Event validation: each rule with its field and reason, keys like the importer's, only accepted events converted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from shopsense.domain import RecordKind
from shopsense.ingest.importer import id_key_sql
from shopsense.services import event_rows
from shopsense.services.event_check import EventChecker
from shopsense.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)


def _event(user: str = "u1", item: str = "i1", kind: str = "view", **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "type": kind, "timestamp": NOW.isoformat(), **extra}


@pytest.fixture
def checker() -> Iterator[EventChecker]:
    checker = EventChecker(Settings())
    yield checker
    checker.close()


def test_each_rule_rejects_with_its_field_and_the_first_failing_rule_wins(checker: EventChecker) -> None:
    batch = [
        _event(event_id="ok-1", kind=" Add_To_Cart ", channel=" App ", context={"page": "home"}),
        _event(kind="teleport", channel="fax"),  # both wrong: the type is reported
        _event(channel="fax"),
        _event(timestamp=(NOW + timedelta(days=3)).isoformat()),
        _event(timestamp="1960-01-01T00:00:00+00:00", channel="fax"),  # channel before time
        {"user_id": "u1"},  # pydantic: missing fields
        _event(event_id="ok-2", timestamp="2024-05-01T12:00:00+02:00", quantity=2, value=9.5),
    ]
    table, rejected = checker.validate(batch)
    assert [(r.index, r.field) for r in rejected] == [
        (1, "type"),
        (2, "channel"),
        (3, "timestamp"),
        (4, "channel"),
        (5, "item_id"),
    ]
    assert rejected[0].reason.startswith("unknown event type 'teleport' (known: ")
    assert rejected[1].reason.startswith("unknown channel 'fax' (known: ")
    assert rejected[2].reason.startswith(f"timestamp {(NOW + timedelta(days=3)).isoformat()} is outside [")
    assert table.schema == event_rows.KEYED
    rows = table.to_pylist()
    assert [r["event_id"] for r in rows] == ["ok-1", "ok-2"]
    assert (rows[0]["type"], rows[0]["channel"], rows[0]["context"]) == ("cart", "app", '{"page": "home"}')
    assert rows[1]["timestamp"] == datetime(2024, 5, 1, 10, tzinfo=UTC), "converted to UTC"
    assert (rows[1]["quantity"], rows[1]["value"], rows[1]["channel"]) == (2.0, 9.5, None)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"kind": "teleport"}, "type"),
        ({"channel": "fax"}, "channel"),
        ({"timestamp": "1960-01-01T00:00:00Z"}, "timestamp"),
        ({"timestamp": (NOW + timedelta(days=3)).isoformat()}, "timestamp"),
    ],
)
def test_a_request_failing_one_rule_only_is_caught(checker: EventChecker, bad: dict[str, Any], field: str) -> None:
    table, rejected = checker.validate([_event(event_id="ok"), _event(**bad)])
    assert [(r.index, r.field) for r in rejected] == [(1, field)] and table["event_id"].to_pylist() == ["ok"]


@pytest.mark.parametrize("ids", [["a"], ["shared-1", "é-ünï", "x" * 256, "🛒 42"]])
def test_keys_from_ids_equal_the_importers(checker: EventChecker, ids: list[str]) -> None:
    table, _ = checker.validate([_event(event_id=i) for i in ids])
    con = duckdb.connect()
    con.register("sent", pa.table({"event_id": ids}))
    expected = [row[0] for row in con.execute(f"SELECT {id_key_sql(RecordKind.EVENTS)} FROM sent").fetchall()]
    got = [(hi << 64) | lo for hi, lo in zip(table["key_hi"].to_pylist(), table["key_lo"].to_pylist(), strict=True)]
    assert got == expected


def test_events_without_ids_are_keyed_by_content_and_numbered_within_a_request(checker: EventChecker) -> None:
    table, rejected = checker.validate([_event(), _event(), _event(event_id="e-9")])
    assert not rejected and table.schema == event_rows.KEYED
    keys = list(zip(table["key_hi"].to_pylist(), table["key_lo"].to_pylist(), strict=True))
    assert len(set(keys)) == 3, "two identical id-less events are two events"
    again, _ = checker.validate([_event(), _event()])
    assert list(zip(again["key_hi"].to_pylist(), again["key_lo"].to_pylist(), strict=True)) == keys[:2]


def test_only_accepted_events_are_converted(checker: EventChecker) -> None:
    """A rejected event's fields are never converted, so what cannot be (here a context that is not
    JSON, which a Python caller can pass) fails nothing."""
    unconvertible = _event(kind="teleport", context={"when": object()})
    table, rejected = checker.validate([unconvertible, _event(event_id="fine")])
    assert [r.index for r in rejected] == [0] and table["event_id"].to_pylist() == ["fine"]


def test_an_empty_or_all_rejected_request_gives_an_empty_keyed_table(checker: EventChecker) -> None:
    table, rejected = checker.validate([_event(kind="teleport")])
    assert table.num_rows == 0 and table.schema == event_rows.KEYED and len(rejected) == 1


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "view", " Cart ", "web", "teleport", "nan", "1e400", "x" * 257]),
    st.sampled_from([NOW.isoformat(), "2026-01-01T00:00:00", "1999-01-01T00:00:00+00:00", "2020-06-01T12:00:00+05:30"]),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.integers(), max_size=2),
    # ids to refuse (control, bidi, zero-width) or to normalise (decomposed), and contexts too deep
    st.sampled_from(["u\x00", "i\x1b", "e\u202e", "s\u2066", "x\u200b", "y\ufeff", "cafe\u0301", "caf\u00e9"]),
    st.sampled_from([128, 129]).map(_nested),
)
_FIELD_NAMES = [*event_rows.SCHEMA.names, "unknown_field"]


@given(
    st.lists(
        st.dictionaries(st.sampled_from(_FIELD_NAMES), _VALUES, max_size=4).map(
            lambda changes: {**_event(event_id="e"), **changes}
        ),
        min_size=1,
        max_size=4,
    )
)
@hypothesis_settings(max_examples=300, deadline=None)
def test_reading_straight_from_the_bytes_agrees_with_checking_event_by_event(events: list[dict[str, Any]]) -> None:
    """``parse`` validates JSON into dicts (the fast path of every request). It must give up on a
    body only when the per-event path (``validate``, model by model) rejects some event's shape,
    and whenever it answers, accept and reject exactly what that path does, with the same rows."""
    checker = EventChecker(Settings())
    try:
        body = json.dumps(events).encode()
        parsed = checker.parse(body)
        expected_table, expected_rejected = checker.validate(json.loads(body))
        if parsed is None:  # some event's shape is wrong, not merely a rule of the settings failed
            assert any(not _a_rule_of_the_settings(r.reason) for r in expected_rejected)
            return
        rows, rejected = parsed
        table = event_rows.keyed_table([rows]) if isinstance(rows, event_rows.Columns) else rows
        assert rejected == expected_rejected
        assert table.equals(expected_table)
    finally:
        checker.close()


def _a_rule_of_the_settings(reason: str) -> bool:
    return reason.startswith(("unknown event type", "unknown channel")) or " is outside [" in reason
