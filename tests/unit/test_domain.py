"""Typed carriers refuse what the store could not hold faithfully."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shopsense.domain import FIELDS, REQUIRED, Event, Item, RecordKind


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
