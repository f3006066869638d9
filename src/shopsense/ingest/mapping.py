"""How a source file's columns become shopsense fields.

A mapping is given as CLI flags (``--map user_id=customer``) or a small TOML file.
Columns whose names already are field names map themselves, so a file written in
shopsense's own vocabulary needs no mapping at all.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shopsense.domain import FIELDS, RecordKind
from shopsense.errors import ConfigError
from shopsense.settings import explain_validation, read_toml


class ExtraColumns(StrEnum):
    """What to do with source columns that map to no field."""

    ERROR = "error"  # refuse the import and name them: nothing is dropped by surprise
    IGNORE = "ignore"  # leave them out, said so in the report
    KEEP = "keep"  # keep them as JSON in `context` (events) or `attributes` (items, users)


class Mapping(BaseModel):
    """Column mapping and parsing options for one source file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RecordKind = RecordKind.EVENTS
    columns: dict[str, str] = Field(default_factory=dict, description="field -> source column")
    constants: dict[str, str | float | int | bool] = Field(
        default_factory=dict, description="field -> value used for every row"
    )
    type_values: dict[str, str] = Field(
        default_factory=dict, description="source event-type value -> shopsense event type"
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
        both = set(self.columns) & set(self.constants)
        if both:
            raise ValueError(f"field(s) {sorted(both)} are given both a column and a constant")
        if self.type_values and self.kind is not RecordKind.EVENTS:
            raise ValueError("type_values applies to events only")
        return self

    def resolve(self, source_columns: list[str]) -> dict[str, str]:
        """Field -> source column: the explicit mapping plus columns named like fields."""
        resolved = dict(self.columns)
        taken = set(resolved.values())
        for field in FIELDS[self.kind]:
            named_like_field = field in source_columns and field not in taken
            if named_like_field and field not in resolved and field not in self.constants:
                resolved[field] = field
        return resolved


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
    for table in ("columns", "constants", "type_values"):
        merged = {**data.get(table, {}), **overrides.pop(table, {})}
        if merged:
            data[table] = merged
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        where = f"mapping file {path}" if path else "mapping options"
        raise ConfigError(f"invalid {where}:\n{explain_validation(exc)}") from exc


def parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    """Turn CLI ``key=value`` pairs into a dict, naming the option when one is malformed."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects FIELD=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out
