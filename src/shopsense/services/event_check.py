"""Validation of API events: each event's shape, the rules that need the settings, the keyed store rows.

The checks need the settings and nothing else of the server (no store, no model), so they live
apart from :mod:`shopsense.services.serving`, which holds that state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NotRequired

import duckdb
import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from shopsense.domain import BAD_ID, ISO_TIME, NAIVE_TIME, TOO_DEEP, Event, RecordKind
from shopsense.errors import ConfigError
from shopsense.ingest.importer import content_key_sql, id_key_sql
from shopsense.services import event_rows
from shopsense.settings import Settings
from shopsense.store.base import EVENT_COLUMNS

_LOW64 = (1 << 64) - 1


class _WireEvent(Event):
    """An event as the API reads it: the time must carry a zone, checked in pydantic's compiled core,
    but is not converted to UTC here. The Arrow column it goes into holds UTC whatever the offset,
    and a per-event ``astimezone`` in Python cost a fifth of validating a batch."""

    timestamp: AwareDatetime
    # The characters of ids and the depth of the context are checked on whole columns, not event by
    # event (event_rows.bad_ids, event_rows.too_deep): the model's rules, without a Python call per event.
    event_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    user_id: Annotated[str, Field(min_length=1, max_length=256)]
    item_id: Annotated[str, Field(min_length=1, max_length=256)]
    session_id: Annotated[str, Field(max_length=256)] | None = None
    context: dict[str, Any] | None = None


def _as_typed_dict(model: type[BaseModel]) -> Any:
    """A TypedDict with ``model``'s fields and constraints (absent optional keys stay absent).

    Pydantic validates JSON into dicts twice as fast as into model instances, and a request only
    needs its events' values. Derived from the model, so the two cannot drift apart.
    """
    fields = {}
    for name, info in model.model_fields.items():
        kind = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        fields[name] = kind if info.is_required() else NotRequired[kind]
    wire = TypedDict(model.__name__, fields)  # type: ignore[misc]
    wire.__pydantic_config__ = ConfigDict(extra=model.model_config.get("extra"))  # type: ignore[attr-defined]
    return wire


class _JsonEvent(_WireEvent):
    """An event read straight from JSON bytes: strict, the time is text only (:data:`ISO_TIME`)."""

    timestamp: Annotated[AwareDatetime, Strict()]


_EVENTS = TypeAdapter(list[_WireEvent])
_WIRE_DICT = _as_typed_dict(_JsonEvent)
_FAST_EVENTS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[_WIRE_DICT])  # type: ignore[valid-type]
_FAST_EVENT: TypeAdapter[dict[str, Any]] = TypeAdapter(_WIRE_DICT)


@dataclass(frozen=True)
class Rejected:
    """One item of a batch that was not accepted, and why."""

    index: int
    reason: str
    field: str | None = None
    rule: bool = False
    """Refused by a rule of the settings (known types and channels, the time window), its shape valid."""


class EventChecker:
    """The verdict on each event of a request, and the accepted ones as rows for the store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._types = settings.event_types.canonical()
        self._channels = set(settings.channels)
        self._local = threading.local()
        self._connections: list[duckdb.DuckDBPyConnection] = []

    def validate(self, raw: list[Any]) -> tuple[pa.Table, list[Rejected]]:
        """Check each event; return the accepted ones as keyed store rows and the rejected with reasons.

        Pydantic checks each event's shape; the rules that need the settings and the conversion to
        Arrow run on whole columns (:mod:`shopsense.services.event_rows`), not event by event.
        """
        rejected = {
            i: Rejected(i, ISO_TIME, "timestamp")
            for i, event in enumerate(raw)
            if isinstance(event, dict) and not isinstance(event.get("timestamp", ""), str)
        }
        kept = [i for i in range(len(raw)) if i not in rejected]
        try:
            events = _EVENTS.validate_python([raw[i] for i in kept])
        except ValidationError as exc:
            for error in exc.errors():
                at = error["loc"][0] if error["loc"] and isinstance(error["loc"][0], int) else -1
                where = ".".join(str(p) for p in error["loc"][1:]) or None
                if isinstance(at, int) and at >= 0 and kept[at] not in rejected:
                    reason = NAIVE_TIME if error["type"] == "timezone_aware" else error["msg"]
                    rejected[kept[at]] = Rejected(kept[at], reason, where)
            kept = [i for i in kept if i not in rejected]
            events = _EVENTS.validate_python([raw[i] for i in kept])
        accepted, rejects = self._accept(event_rows.columns(events), kept)
        return self._stored_rows(accepted), sorted([*rejected.values(), *rejects], key=lambda r: r.index)

    def parse(self, body: bytes) -> tuple[pa.Table | event_rows.Columns, list[Rejected]] | None:
        """The events of a JSON request body (one object or an array) when it is valid JSON and every
        event has a valid shape, as :meth:`validate` would accept them; None otherwise.

        Nearly every request is like that, and validating it straight from the bytes skips building
        Python dicts first. Small requests of events with ids are left as column lists for the writer
        to convert and key together with the rest of their commit. For anything else, :meth:`validate`
        on the parsed body gives each event its own verdict.
        """
        many = body[:64].lstrip()[:1] == b"["
        try:
            events = _FAST_EVENTS.validate_json(body) if many else [_FAST_EVENT.validate_json(body)]
        except ValidationError:
            return None
        if not events:
            return None
        accepted, rejected = self._accept(event_rows.dict_columns(events), list(range(len(events))))
        if None not in accepted["event_id"] and len(events) < event_rows.ALONE_ROWS:
            return event_rows.Columns(accepted), rejected
        return self._stored_rows(accepted), rejected

    def close(self) -> None:
        """Close the in-memory connections that keyed events without ids."""
        for con in self._connections:
            con.close()

    def _accept(self, fields: dict[str, list[Any]], kept: list[int]) -> tuple[dict[str, list[Any]], list[Rejected]]:
        """The rules that need the settings, on the ``fields`` of well-shaped events (at positions
        ``kept`` of the request): the accepted events' fields, and the rejected with reasons."""
        rejected = []
        now = datetime.now(UTC)
        earliest = datetime.fromisoformat(self.settings.ingest.min_timestamp)
        latest = now + timedelta(seconds=self.settings.ingest.max_future_seconds)
        given = {name: fields[name].__getitem__ for name in ("type", "channel", "timestamp")}
        types = event_rows.canonical(fields["type"], self._types)
        channels = event_rows.canonical(fields["channel"], {name: name for name in self._channels})
        failed = event_rows.failures(types, fields["channel"], channels, fields["timestamp"], earliest, latest)
        for at, rule in failed.items():
            rejected.append(Rejected(kept[at], self._event_problem(given[rule](at), rule, earliest), rule, rule=True))
        bad = event_rows.bad_ids(fields)
        bad.update((at, "context") for at in event_rows.too_deep(fields["context"]) if at not in bad)
        bad = {at: field for at, field in bad.items() if at not in failed}
        if bad:
            reasons = {"context": TOO_DEEP}
            rejected += [Rejected(kept[at], reasons.get(field, BAD_ID), field) for at, field in bad.items()]
            rejected.sort(key=lambda r: r.index)
            failed.update(bad)
        fields.update(type=types, channel=channels)
        return event_rows.kept(fields, list(failed)), rejected

    def _stored_rows(self, accepted: dict[str, list[Any]]) -> pa.Table:
        """Accepted events as keyed store rows. Only accepted events are converted: what Arrow cannot
        encode in a rejected one fails nothing."""
        try:
            return self._keyed(accepted)
        except (pa.ArrowException, UnicodeError, OverflowError) as exc:  # e.g. a lone surrogate in an id
            raise ConfigError(f"the events cannot be stored as given: {exc}") from exc

    def _event_problem(self, value: Any, field: str, earliest: datetime) -> str:
        """Why an event whose ``field`` holds ``value`` fails the rule on that field, the first rule it
        fails (found for the whole batch)."""
        if field == "type":
            return f"unknown event type {value!r} (known: {', '.join(sorted(self._types))})"
        if field == "channel":
            return f"unknown channel {value!r} (known: {', '.join(sorted(self._channels))})"
        return f"timestamp {value.isoformat()} is outside [{earliest}, now + max_future]"

    def _keyed(self, fields: dict[str, list[Any]]) -> pa.Table:
        """Store rows with the same idempotency keys the file importer gives (re-sent events collapse)."""
        ids = fields["event_id"]
        if None not in ids:  # the usual case: keys straight from the ids
            return event_rows.table(fields, event_rows.id_keys(ids))
        table = event_rows.table(fields)
        con = self._duck()
        con.register("incoming", table)
        try:
            # Identical id-less events in one request are separate events (two views of one page): the
            # second and later copies get numbered keys, as in file imports.
            keyed = con.sql(
                f"""SELECT CAST(k >> 64 AS UBIGINT) AS key_hi, CAST(k & {_LOW64} AS UBIGINT) AS key_lo, *
                EXCLUDE (k, n, r, c) FROM (
                    SELECT *, CASE WHEN event_id IS NULL AND n > 1 THEN md5_number(CAST(c AS VARCHAR) || '#' || n)
                                   ELSE c END AS k
                    FROM (SELECT *, row_number() OVER (PARTITION BY c ORDER BY r) AS n FROM (
                        SELECT *, coalesce({id_key_sql(RecordKind.EVENTS)}, {content_key_sql(RecordKind.EVENTS)}) AS c,
                               row_number() OVER () AS r
                        FROM incoming))
                ) ORDER BY r"""
            ).to_arrow_table()
        finally:
            con.unregister("incoming")
        return keyed.select(list(EVENT_COLUMNS))

    def _duck(self) -> duckdb.DuckDBPyConnection:
        """This thread's in-memory connection, for the content keys of events without ids."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            self._local.con = con
            self._connections.append(con)
        return con
