"""Typed carriers for the three things a retailer has: users, items and behaviour events.

The pydantic models validate single records (API payloads, Python callers); bulk data
moves as Arrow tables whose columns are the field names declared here, so one
vocabulary serves both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class RecordKind(StrEnum):
    """What a file or payload holds."""

    EVENTS = "events"
    ITEMS = "items"
    USERS = "users"


NAIVE_TIME = "timestamp needs a time zone (e.g. 2024-05-01T10:00:00Z)"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(NAIVE_TIME)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
"""A timezone-aware time, converted to UTC; naive times are refused rather than guessed."""


class Event(BaseModel):
    """One thing a user did with an item: viewed, carted, bought, rated, returned…

    ``type`` is checked against the configured event types by the ingest layer, which
    knows the settings; this model only checks shape.
    """

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(None, min_length=1, max_length=256)
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1)
    timestamp: UtcDatetime
    channel: str | None = None
    session_id: str | None = Field(None, max_length=256)
    quantity: float = Field(1.0, gt=0, allow_inf_nan=False)
    value: float | None = Field(None, ge=0, allow_inf_nan=False)
    rating: float | None = Field(None, allow_inf_nan=False)
    context: dict[str, Any] | None = None


class Item(BaseModel):
    """A catalogue entry. ``category`` is a path from the root, e.g. ``["Home", "Kitchen"]``."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=256)
    title: str | None = None
    description: str | None = None
    category: list[str] | None = None
    brand: str | None = None
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    currency: str | None = Field(None, min_length=3, max_length=3)
    available: bool | None = None
    stock: int | None = Field(None, ge=0, le=2**63 - 1)
    attributes: dict[str, Any] | None = None
    first_seen: UtcDatetime | None = None


class User(BaseModel):
    """A customer, known by the retailer's own id; attributes are free-form (country, tier…)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    attributes: dict[str, Any] | None = None
    first_seen: UtcDatetime | None = None


FIELDS: dict[RecordKind, tuple[str, ...]] = {
    kind: tuple(model.model_fields)
    for kind, model in (
        (RecordKind.EVENTS, Event),
        (RecordKind.ITEMS, Item),
        (RecordKind.USERS, User),
    )
}
"""Canonical field names per record kind, in declaration order."""

REQUIRED: dict[RecordKind, frozenset[str]] = {
    RecordKind.EVENTS: frozenset({"user_id", "item_id", "type", "timestamp"}),
    RecordKind.ITEMS: frozenset({"item_id"}),
    RecordKind.USERS: frozenset({"user_id"}),
}
"""Fields a source must provide (by column or constant) for each record kind."""

ID_FIELD: dict[RecordKind, str] = {
    RecordKind.EVENTS: "event_id",
    RecordKind.ITEMS: "item_id",
    RecordKind.USERS: "user_id",
}


class IdIndex:
    """One vocabulary: external string ids <-> dense integer indices, in first-seen order.

    Models and matrices work on dense indices; callers only ever see external ids.
    """

    def __init__(self, ids: list[str]) -> None:
        self._ids = list(ids)
        self._index = {value: i for i, value in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            raise ValueError("ids must be unique")

    def __len__(self) -> int:
        return len(self._ids)

    def index(self, ids: Sequence[str]) -> list[int]:
        """Dense index of each id, -1 for ids this vocabulary does not know."""
        return [self._index.get(value, -1) for value in ids]

    def ids(self, indices: list[int]) -> list[str]:
        """External ids of dense indices."""
        return [self._ids[i] for i in indices]

    @property
    def values(self) -> Sequence[str]:
        """All ids, in index order (not a copy: a live request reads a few of 100,000)."""
        return self._ids
