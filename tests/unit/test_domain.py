"""Typed carriers refuse what the store could not hold faithfully."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shopsense.domain import BAD_ID, FIELDS, MAX_JSON_DEPTH, REQUIRED, Event, Item, RecordKind, User, json_depth


def test_event_times_must_carry_a_zone_and_become_utc() -> None:
    paris = timezone(timedelta(hours=1))
    event = Event(user_id="u", item_id="i", type="view", timestamp=datetime(2024, 1, 1, 12, tzinfo=paris))
    assert event.timestamp.isoformat() == "2024-01-01T11:00:00+00:00"
    with pytest.raises(ValidationError, match="needs a time zone"):
        Event(user_id="u", item_id="i", type="view", timestamp=datetime(2024, 1, 1, 12))


def test_quantities_prices_and_ids_are_checked() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="greater than 0"):
        Event(user_id="u", item_id="i", type="purchase", timestamp=when, quantity=0)
    with pytest.raises(ValidationError, match="at least 1 character"):
        Event(user_id="", item_id="i", type="view", timestamp=when)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Item(item_id="i", price=-1)


def test_field_lists_follow_the_models() -> None:
    assert FIELDS[RecordKind.EVENTS][:4] == ("event_id", "user_id", "item_id", "type")
    assert REQUIRED[RecordKind.EVENTS] <= set(FIELDS[RecordKind.EVENTS])


def test_json_depth_is_counted_without_recursion_and_capped() -> None:
    assert (json_depth(1), json_depth({}), json_depth({"a": [1, {"b": {}}]})) == (0, 1, 4)
    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    assert json_depth(deep) == MAX_JSON_DEPTH + 1, "the walk stops past the limit"


def test_ids_refuse_invisible_characters_and_are_kept_in_nfc() -> None:
    assert User(user_id="cafe\u0301").user_id == "caf\u00e9"
    assert User(user_id="日本 shop").user_id == "日本 shop"
    for bad in ("a\x00", "a\n", "\x7f", "a\u202eb", "a\u2067", "a\u200c", "a\u2060", "\ufeffa"):
        with pytest.raises(ValidationError, match=BAD_ID):
            User(user_id=bad)


def test_a_time_that_leaves_the_calendar_in_utc_is_a_validation_error_not_a_crash() -> None:
    with pytest.raises(ValidationError, match="out of range once converted to UTC"):
        Item.model_validate({"item_id": "i1", "first_seen": "0001-01-01T00:00:00+05:00"})
