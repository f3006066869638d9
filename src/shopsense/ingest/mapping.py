"""How a source file's columns become shopsense fields.

A mapping is given as CLI flags (``--map user_id=customer``) or a small TOML file.
Columns whose names already are field names map themselves, so a file written in
shopsense's own vocabulary needs no mapping at all.
"""

from __future__ import annotations

import difflib
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shopsense.domain import FIELDS, RecordKind
from shopsense.errors import ConfigError
from shopsense.ingest.expressions import ExpressionError, check_expression
from shopsense.settings import read_toml

_UNIX_FORMATS = ("unix_s", "unix_ms")
_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-16": "utf-16", "utf16": "utf-16"} | dict.fromkeys(
    ("latin-1", "latin1", "iso-8859-1", "iso8859-1"), "latin-1"
)
"""Encodings DuckDB's CSV reader decodes itself, by the spellings people use for them."""
_TABLES = ("columns", "constants", "type_values", "channel_values", "derived")


class ExtraColumns(StrEnum):
    """What to do with source columns that map to no field."""

    ERROR = "error"  # refuse the import and name them: nothing is dropped by surprise
    IGNORE = "ignore"  # leave them out, said so in the report
    KEEP = "keep"  # keep them as JSON in `context` (events) or `attributes` (items, users)


class ZeroQuantity(StrEnum):
    """What to do with event rows whose quantity is 0 (coupons, weighed items in grocery exports)."""

    KEEP = "keep"  # store them with quantity 0
    DROP = "drop"  # leave them out, counted in the report
    ERROR = "error"  # reject them as problems, like a negative quantity


class Mapping(BaseModel):
    """Column mapping and parsing options for one source file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RecordKind = RecordKind.EVENTS
    columns: dict[str, str | int] = Field(
        default_factory=dict, description="field -> source column, by name or by 1-based position"
    )
    header: bool = Field(True, description="whether a CSV file's first line names its columns")
    source_columns: list[str] = Field(
        default_factory=list, description="names of a headerless CSV file's columns, in order (--columns)"
    )
    derived: dict[str, str] = Field(
        default_factory=dict, description="field -> SQL expression over the source columns (see ingest.expressions)"
    )
    zero_quantity: ZeroQuantity | None = Field(None, description="events with quantity 0: keep, drop or error")
    constants: dict[str, str | float | int | bool] = Field(
        default_factory=dict, description="field -> value used for every row"
    )
    type_values: dict[str, str] = Field(
        default_factory=dict, description="source event-type value -> shopsense event type"
    )
    channel_values: dict[str, str] = Field(
        default_factory=dict, description="source channel value -> configured channel"
    )
    timestamp_format: str | None = Field(None, description="strptime format, 'unix_s' or 'unix_ms'; default: ISO 8601")
    timezone: str = Field("UTC", description="zone of timestamps that carry no offset")
    category_separator: str = Field(">", min_length=1, description="separator of a category path")
    extra: ExtraColumns = ExtraColumns.ERROR
    delimiter: str | None = Field(None, description="CSV delimiter; default: detected")
    encoding: str = Field("utf-8", description="CSV encoding: utf-8, utf-16 or latin-1")

    @model_validator(mode="after")
    def _known_fields(self) -> Mapping:
        fields = set(FIELDS[self.kind])
        for name in [*self.columns, *self.constants]:
            if name not in fields:
                raise ValueError(f"{name!r} is not a {self.kind.value} field (fields: {', '.join(FIELDS[self.kind])})")
        for name in self.derived:
            if name not in fields:
                raise ValueError(
                    f"derived {name!r} is not a {self.kind.value} field (fields: {', '.join(FIELDS[self.kind])})"
                )
        both = set(self.columns) & set(self.constants)
        if both:
            raise ValueError(f"field(s) {sorted(both)} are given both a column and a constant")
        twice = sorted((set(self.columns) | set(self.constants)) & set(self.derived))
        if twice:
            raise ValueError(f"field(s) {twice} are derived and also given a column or constant: pick one")
        for name, expression in self.derived.items():
            try:
                check_expression(expression)
            except ExpressionError as exc:
                raise ValueError(f"derived field {name} = {expression!r} is refused: {exc}") from None
        for name, position in self.columns.items():
            if isinstance(position, int) and position < 1:
                raise ValueError(f"column position of {name} must be 1 or more (the first column is 1), got {position}")
        if self.source_columns and self.header:
            raise ValueError(
                "column names (--columns, source_columns) are for a headerless file: add --no-header "
                "(header = false in a mapping file)"
            )
        names = self.source_columns
        if any(not n for n in names):
            raise ValueError("a column name in --columns/source_columns is empty")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"column name(s) {repeated} are given twice in --columns/source_columns")
        if self.zero_quantity is not None and self.kind is not RecordKind.EVENTS:
            raise ValueError("zero_quantity applies to events only")
        for table in ("type_values", "channel_values"):
            if getattr(self, table) and self.kind is not RecordKind.EVENTS:
                raise ValueError(f"{table} applies to events only")
        return self

    @field_validator("source_columns")
    @classmethod
    def _trimmed_names(cls, value: list[str]) -> list[str]:
        return [name.strip() for name in value]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("encoding")
    @classmethod
    def _readable_encoding(cls, value: str) -> str:
        found = _ENCODINGS.get(value.strip().lower())
        if found is None:
            raise ValueError(f"encoding {value!r} is not one the reader knows: utf-8, utf-16 or latin-1")
        return found

    @field_validator("timestamp_format")
    @classmethod
    def _usable_format(cls, value: str | None) -> str | None:
        return value if value is None else check_timestamp_format(value)

    def resolve(self, source_columns: list[str]) -> dict[str, str]:
        """Field -> source column: the explicit mapping (a position picks the column there) plus columns
        named like fields; a position past the last column is kept as ``#<n>``, which names no column."""
        resolved = {field: self._column(c, source_columns) for field, c in self.columns.items()}
        taken = set(resolved.values())
        for field in FIELDS[self.kind]:
            named_like_field = field in source_columns and field not in taken
            given = field in resolved or field in self.constants or field in self.derived
            if named_like_field and not given:
                resolved[field] = field
        return resolved

    def _column(self, given: str | int, source_columns: list[str]) -> str:
        """The source column a mapping names: by name, or by position (an int, or in a headerless file
        whose columns have no names, digits such as ``--map user_id=1``)."""
        if isinstance(given, str) and not (given.isdigit() and not self.header and given not in source_columns):
            return given
        position = int(given)
        if 1 <= position <= len(source_columns):
            return source_columns[position - 1]
        return f"#{position}"


def load_mapping(path: Path | None, kind: RecordKind, overrides: dict[str, Any]) -> Mapping:
    """Read a TOML mapping file (optional) and apply CLI overrides on top.

    Args:
        path: TOML file with the keys of :class:`Mapping`, or None.
        kind: the record kind the command imports; a file that says another kind is an error.
        overrides: CLI values; ``columns``/``constants`` merge into the file's tables.
    """
    data = read_toml(path, "mapping file") if path is not None else {}
    if data.get("kind", kind.value) != kind.value:
        raise ConfigError(f"mapping file {path} is for {data['kind']!r}, but {kind.value!r} are imported")
    data["kind"] = kind.value
    flags = {k for k, v in overrides.items() if v is not None}
    for table in _TABLES:
        merged = {**data.get(table, {}), **overrides.pop(table, {})}
        if merged:
            data[table] = merged
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, flags)) from exc


_FLAGS = {"header": "--no-header", "source_columns": "--columns"}
"""Mapping keys whose CLI option is not named after them."""


def _explain(exc: ValidationError, path: Path | None, flags: set[str]) -> str:
    """Name each bad setting the way the user gave it: ``--timezone`` for a flag, the key for a file."""
    lines = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        if key in flags and key not in _TABLES:
            where = _FLAGS.get(key, "--" + key.replace("_", "-"))
        elif path is not None:
            where = f"mapping file {path}" + (f", {key}" if key else "")
        else:
            where = f"mapping option {key}" if key else "mapping options"
        lines.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    return "invalid " + lines[0] if len(lines) == 1 else "invalid mapping:\n" + "\n".join(f"  {x}" for x in lines)


@cache
def _zones() -> dict[str, str]:
    """Lower-case name -> spelling of every time zone DuckDB's ICU knows: the reader's own list."""
    with duckdb.connect() as con:
        names = [row[0] for row in con.execute("SELECT name FROM pg_timezone_names()").fetchall()]
    return {name.lower(): name for name in names}


def check_timezone(name: str) -> str:
    """The zone's canonical spelling; an unknown zone is refused here, before any file is read.

    DuckDB would only fail once a row needs the zone (mid-import, as a traceback), or never
    when every timestamp carries an offset, so a typo would pass unnoticed.
    """
    zones = _zones()
    found = zones.get(name.strip().lower())
    if found is not None:
        return found
    close = difflib.get_close_matches(name.strip().lower(), list(zones), n=3, cutoff=0.6)
    guess = f"; did you mean {' or '.join(repr(zones[c]) for c in close)}?" if close else ""
    raise ValueError(f"unknown time zone {name!r}{guess} (IANA names such as 'Europe/London', 'UTC')")


def check_timestamp_format(fmt: str) -> str:
    """Refuse a format DuckDB's strptime cannot use, naming the bad specifier, before any file is read."""
    if fmt in _UNIX_FORMATS:
        return fmt
    if "%" not in fmt:
        raise ValueError(
            f"timestamp format {fmt!r} has no %-directive; give a strptime format such as '%d/%m/%Y %H:%M', "
            "or unix_s / unix_ms"
        )
    reason = _strptime_refusal(fmt)
    if reason:
        raise ValueError(f"timestamp format {fmt!r} is not usable: {reason}")
    return fmt


def _strptime_refusal(fmt: str) -> str:
    """DuckDB's reason for refusing a strptime format, "" when it accepts it.

    The error is turned into text here, in the frame that owns the connection, so no exception
    that references DuckDB objects outlives it (pydantic keeps a validator's exception in a
    cycle the collector cannot see, which kept the connection alive to interpreter exit).
    """
    con = duckdb.connect()
    try:
        con.execute("SELECT try_strptime('', $1)", [fmt])
        return ""
    except duckdb.Error as exc:
        return str(exc).splitlines()[0].split("Error: ", 1)[-1]
    finally:
        con.close()


def parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    """Turn CLI ``key=value`` pairs into a dict, naming the option when one is malformed."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects FIELD=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out
