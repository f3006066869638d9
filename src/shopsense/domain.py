"""Typed carriers for the three things a retailer has: users, items and behaviour events.

The pydantic models validate single records (API payloads, Python callers); bulk data
moves as Arrow tables whose columns are the field names declared here, so one
vocabulary serves both paths.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict


class RecordKind(StrEnum):
    """What a file or payload holds."""

    EVENTS = "events"
    ITEMS = "items"
    USERS = "users"


NAIVE_TIME = "timestamp needs a time zone (e.g. 2024-05-01T10:00:00Z)"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(NAIVE_TIME)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise ValueError("timestamp out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
"""A timezone-aware time, converted to UTC; naive times are refused rather than guessed."""

ISO_TIME = "give the time as ISO-8601 text with a zone, e.g. 2024-05-01T10:00:00Z (not a number)"
"""Why a time given as a number is refused: pydantic would read it as Unix seconds (or milliseconds, by size)."""
_ISO_DATE = re.compile(r"\s*[+-]?\d{4,}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value
    raise ValueError(ISO_TIME)


IsoTime = Annotated[UtcDatetime, BeforeValidator(_iso_text)]
"""A time of a JSON record: ISO-8601 text with a zone (or a datetime from Python), converted to UTC."""


def _json_integer(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError("Input should be a valid integer (a JSON number, not text or a boolean)")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
"""An integer of a JSON record: text ("5") and booleans are refused rather than converted. Bounds go in the
field's ``Field`` (or before the validator, in an optional one) so the schema states them."""
JsonFloat = Annotated[float, Strict()]
"""A number of a JSON record: integers are taken, text ("5") and booleans refused (checked in pydantic's core)."""
JsonBool = Annotated[bool, Strict()]
"""A boolean of a JSON record: 0, 1, "true" are refused rather than converted."""

MAX_JSON_DEPTH = 128
"""Deepest nesting accepted in free-form JSON (event ``context``, item and user ``attributes``), by
every entry point (API and file import): ``{"a": 1}`` is 1 deep, ``{"a": {"b": [1]}}`` 3."""
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"

FORBIDDEN_ID_RANGES: tuple[tuple[int, int], ...] = (
    (0x00, 0x1F),  # C0 controls, NUL included
    (0x7F, 0x7F),  # DEL
    (0x200B, 0x200D),  # zero-width space, non-joiner, joiner
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x2060),  # word joiner
    (0x2066, 0x2069),  # bidi isolates
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
)
"""Code points refused in ids: invisible or reordering characters that make two ids look alike."""
BAD_ID = "contains a control, bidi or zero-width character"
_BAD_ID_CHAR = re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in FORBIDDEN_ID_RANGES) + "]")
ID_PATTERN = "^[^" + "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in FORBIDDEN_ID_RANGES) + "]*$"
"""The same rule as a JSON-schema pattern, for the API's documentation (checked by :func:`checked_id`)."""


def plain_ids(text: str) -> bool:
    """True when ``text`` (an id, or many joined) surely holds no forbidden character and is in NFC:
    printable ASCII, the usual case, told in one C-level pass."""
    return text.isascii() and text.isprintable()


def id_problem(value: str) -> str | None:
    """Why ``value`` may not be an id (:data:`BAD_ID`), or None."""
    return BAD_ID if _BAD_ID_CHAR.search(value) else None


def checked_id(value: str) -> str:
    """An id as stored: refused (ValueError, :data:`BAD_ID`) when it holds a forbidden character, else in
    Unicode NFC. The one rule for ids, whether they come from the API, a file or the command line."""
    if plain_ids(value):
        return value
    if _BAD_ID_CHAR.search(value):
        raise ValueError(BAD_ID)
    return unicodedata.normalize("NFC", value)


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``value`` nests (a scalar 0, ``{}`` 1), counted up to ``limit + 1`` without recursion."""
    deepest = 0
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _shallow(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(TOO_DEEP)
    return value


Id = Annotated[
    str, Field(min_length=1, max_length=256, json_schema_extra={"pattern": ID_PATTERN}), AfterValidator(checked_id)
]
"""A user, item, event or session id: no control, bidi or zero-width character; stored in NFC."""
JsonObject = Annotated[dict[str, Any], AfterValidator(_shallow)]
"""Free-form JSON, at most :data:`MAX_JSON_DEPTH` deep."""


class Event(BaseModel):
    """One thing a user did with an item: viewed, carted, bought, rated, returned…

    ``type`` is checked against the configured event types by the ingest layer, which
    knows the settings; this model only checks shape.
    """

    model_config = ConfigDict(extra="forbid")

    event_id: Id | None = None
    user_id: Id
    item_id: Id
    type: str = Field(min_length=1)
    timestamp: UtcDatetime
    channel: str | None = None
    session_id: (
        Annotated[str, Field(max_length=256, json_schema_extra={"pattern": ID_PATTERN}), AfterValidator(checked_id)]
        | None
    ) = None
    quantity: JsonFloat = Field(1.0, gt=0, allow_inf_nan=False)
    value: JsonFloat | None = Field(None, ge=0, allow_inf_nan=False)
    rating: JsonFloat | None = Field(None, allow_inf_nan=False)
    context: JsonObject | None = None


class Item(BaseModel):
    """A catalogue entry. ``category`` is a path from the root, e.g. ``["Home", "Kitchen"]``."""

    model_config = ConfigDict(extra="forbid")

    item_id: Id
    title: str | None = None
    description: str | None = None
    category: list[str] | None = None
    brand: str | None = None
    price: JsonFloat | None = Field(None, ge=0, allow_inf_nan=False)
    currency: str | None = Field(None, min_length=3, max_length=3)
    available: JsonBool | None = None
    stock: Annotated[int, Field(ge=0, le=2**63 - 1), BeforeValidator(_json_integer)] | None = None
    attributes: JsonObject | None = None
    first_seen: IsoTime | None = None


class User(BaseModel):
    """A customer, known by the retailer's own id; attributes are free-form (country, tier…)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    attributes: JsonObject | None = None
    first_seen: IsoTime | None = None


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
