"""Validated API events as Arrow columns, built column by column rather than event by event.

A request of a thousand events must not cost a thousand pydantic copies and dumps and a
row-wise Arrow conversion: the validated models are read once into one value list per field,
rules that depend on the settings look at each distinct value once, and the Arrow columns and
idempotency keys are built from whole lists. A one-event request pays for every Arrow call's
fixed cost instead, so those calls are few: one per column type.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, compress, repeat
from operator import attrgetter, is_, methodcaller
from typing import Any

import numpy as np
import pyarrow as pa

from shopsense.domain import MAX_JSON_DEPTH, Event, id_problem, json_depth, plain_ids

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        *((name, pa.string()) for name in ("event_id", "user_id", "item_id", "type")),
        ("timestamp", TS),
        *((name, pa.string()) for name in ("channel", "session_id")),
        *((name, pa.float64()) for name in ("quantity", "value", "rating")),
        ("context", pa.string()),
    ]
)
"""Events as the store takes them, before their idempotency keys."""
KEYED = pa.schema([("key_hi", pa.uint64()), ("key_lo", pa.uint64()), *SCHEMA])
"""Events with their idempotency keys: the store's EVENT_COLUMNS."""
ALONE_ROWS = 500
"""A request of this many events stands alone: it is keyed and converted in its own thread, and the
writer makes it durable without waiting for others to share the sync (merging saves nothing worth
the wait, and the writer has less to do in series)."""
_FIELDS = attrgetter(*SCHEMA.names)
_DEFAULTS = {name: Event.model_fields[name].get_default() for name in SCHEMA.names}
_SAME_TYPE = [(kind, [field.name for field in SCHEMA if field.type == kind]) for kind in (pa.string(), pa.float64())]


@dataclass(frozen=True)
class Columns:
    """Accepted events that all have ids, not yet in Arrow: the store's writer converts and keys every
    request sharing a commit at once. A one-event request would otherwise pay each Arrow call's fixed
    cost on its own, and an event's key depends only on its id, so merging requests changes none."""

    fields: dict[str, list[Any]]

    @property
    def num_rows(self) -> int:
        return len(self.fields["event_id"])


def keyed_table(parts: Sequence[Columns]) -> pa.Table:
    """One table of :data:`KEYED` rows holding the events of ``parts``, in order."""
    if len(parts) == 1:
        fields = parts[0].fields
    else:
        fields = {name: list(chain.from_iterable(part.fields[name] for part in parts)) for name in SCHEMA.names}
    return table(fields, id_keys(fields["event_id"]))


def columns(events: Sequence[Event]) -> dict[str, list[Any]]:
    """Each field's values over the events, in the order of :data:`SCHEMA`."""
    if not events:
        return {name: [] for name in SCHEMA.names}
    rows = map(_FIELDS, events)
    return {name: list(values) for name, values in zip(SCHEMA.names, zip(*rows, strict=True), strict=True)}


def dict_columns(events: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Each field's values over events validated as dicts, in the order of :data:`SCHEMA`; an absent
    key means the field's default."""
    return {name: [event.get(name, default) for event in events] for name, default in _DEFAULTS.items()}


def canonical(values: Sequence[str | None], spellings: Mapping[str, str]) -> list[str | None]:
    """Each value trimmed and lower-cased, then looked up in ``spellings`` (None when absent or None).

    Python's own ``strip``/``lower`` decide, as they would for one event, but once per distinct value:
    a batch repeats a handful of types and channels.
    """
    mapped = {value: None if value is None else spellings.get(value.strip().lower()) for value in set(values)}
    return list(map(mapped.__getitem__, values))


def failures(
    types: Sequence[str | None],
    given_channels: Sequence[str | None],
    channels: Sequence[str | None],
    times: Sequence[datetime],
    earliest: datetime,
    latest: datetime,
) -> dict[int, str]:
    """The events failing a rule, by position, each with the first rule it fails: an unknown "type"
    (canonical type None), an unknown "channel" (given but without canonical form), a "timestamp"
    outside ``[earliest, latest]``.

    Nearly every request passes: three scans of plain lists tell, and the per-event masks are only
    built when some event fails.
    """
    if (
        None not in types
        and channels.count(None) == given_channels.count(None)
        and (not times or (earliest <= min(times) and max(times) <= latest))
    ):
        return {}
    masks = {
        "type": _none(types),
        "channel": _none(channels) & ~_none(given_channels),
        "timestamp": ~(_compared(earliest.__le__, times) & _compared(latest.__ge__, times)),
    }
    failed = np.stack(list(masks.values()))
    rows = np.flatnonzero(failed.any(axis=0))
    names = list(masks)
    return {int(row): names[rule] for row, rule in zip(rows, failed[:, rows].argmax(axis=0), strict=True)}


ID_FIELDS = ("event_id", "user_id", "item_id", "session_id")
"""The fields holding ids: no control, bidi or zero-width character, stored in NFC."""


def bad_ids(fields: dict[str, list[Any]]) -> dict[int, str]:
    """Put the ids of ``fields`` in Unicode NFC, in place, and return the events whose ids hold a
    forbidden character, by position, with the first such field.

    All the ids are joined and looked at once (printable ASCII, nearly always, needs nothing more);
    only otherwise is each id checked and normalised.
    """
    bad: dict[int, str] = {}
    if plain_ids("".join(filter(None, chain.from_iterable(map(fields.__getitem__, ID_FIELDS))))):
        return bad
    for name in ID_FIELDS:
        values = fields[name]
        for at, value in enumerate(values):
            if not value or plain_ids(value):
                continue
            if id_problem(value):
                bad.setdefault(at, name)
            else:
                values[at] = unicodedata.normalize("NFC", value)
    return bad


_SCALARS = frozenset({str, int, float, bool, type(None)})


def too_deep(contexts: Sequence[Mapping[str, Any] | None]) -> list[int]:
    """Positions of the contexts nested deeper than :data:`~shopsense.domain.MAX_JSON_DEPTH`.

    One pass over the values of every context tells when none holds a container (nearly always);
    only then are the contexts walked, each without recursion.
    """
    kinds = set(map(type, chain.from_iterable(map(methodcaller("values"), filter(None, contexts)))))
    if kinds <= _SCALARS:
        return []
    return [at for at, context in enumerate(contexts) if context and json_depth(context) > MAX_JSON_DEPTH]


def kept(fields: Mapping[str, list[Any]], dropped: Sequence[int]) -> dict[str, list[Any]]:
    """The fields without the events at positions ``dropped``."""
    if not dropped:
        return dict(fields)
    keep = np.ones(len(fields["event_id"]), dtype=bool)
    keep[list(dropped)] = False
    return {name: list(compress(values, keep)) for name, values in fields.items()}


def table(fields: Mapping[str, Sequence[Any]], keys: tuple[pa.Array, pa.Array] | None = None) -> pa.Table:
    """The events as an Arrow table of :data:`SCHEMA` (context as JSON text), or of :data:`KEYED`
    when their (high, low) key halves are given.

    The columns of one type are converted together and sliced apart (slices share the buffer); the
    times go into a zone-less column, which Arrow fills with their UTC values, and are then labelled
    UTC: converting into the labelled type asks every value for its offset, 15x slower.
    """
    values = {**fields, "context": list(map(_json, fields["context"]))}
    rows = len(values["event_id"])
    arrays = {"timestamp": pa.array(values["timestamp"], pa.timestamp("us")).view(TS)}
    for kind, names in _SAME_TYPE:
        together = pa.array(list(chain.from_iterable(values[name] for name in names)), kind)
        arrays.update({name: together.slice(at * rows, rows) for at, name in enumerate(names)})
    ordered = [arrays[name] for name in SCHEMA.names]
    if keys is None:
        return pa.Table.from_arrays(ordered, schema=SCHEMA)
    return pa.Table.from_arrays([*keys, *ordered], schema=KEYED)


def id_keys(event_ids: Sequence[str]) -> tuple[pa.Array, pa.Array]:
    """The idempotency keys of events with ids: md5 of "id:" + event_id read as a little-endian 128-bit
    number, as the file importer's ``md5_number`` gives them, split into (high, low) 64-bit halves."""
    prefixed = map(b"id:".__add__, map(str.encode, event_ids))
    digests = b"".join(map(methodcaller("digest"), map(hashlib.md5, prefixed)))
    halves = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    return pa.array(halves[:, 1], pa.uint64()), pa.array(halves[:, 0], pa.uint64())


def _none(values: Sequence[Any]) -> np.ndarray:
    return np.fromiter(map(is_, values, repeat(None)), bool, len(values))


def _compared(test: Any, values: Sequence[Any]) -> np.ndarray:
    return np.fromiter(map(test, values), bool, len(values))


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)
