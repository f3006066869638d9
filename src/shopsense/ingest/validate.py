"""Validation rules as SQL, so a 10M-row file is checked in one columnar pass.

Each field has a *typed* expression (what gets stored) and rules (condition + reason)
over the raw value. Rules are evaluated by DuckDB; Python only assembles the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shopsense.domain import RecordKind
from shopsense.ingest.mapping import Mapping
from shopsense.settings import Settings


def lit(value: object) -> str:
    """A SQL literal for a Python constant (strings quoted and escaped)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier (source columns may hold spaces, quotes, anything)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Rule:
    """One check: rows where ``condition`` holds are bad for ``reason`` (a SQL string expression)."""

    column: str
    condition: str
    reason: str


@dataclass(frozen=True)
class FieldPlan:
    """Typed SQL expressions per field, and the rules over them, for one record kind."""

    typed: dict[str, str]
    rules: list[Rule]

    def ok_condition(self) -> str:
        """True for rows that pass every rule."""
        if not self.rules:
            return "TRUE"
        return "NOT (" + " OR ".join(f"coalesce({r.condition}, FALSE)" for r in self.rules) + ")"


def _raw(field: str) -> str:
    return ident(f"r_{field}")


def _text(field: str) -> str:
    return f"NULLIF(trim(CAST({_raw(field)} AS VARCHAR)), '')"


def _timestamp(field: str, mapping: Mapping, raw_type: str) -> str:
    """Parse a raw value into TIMESTAMPTZ (UTC) following the mapping's format and zone."""
    raw = _raw(field)
    zone = lit(mapping.timezone)
    fmt = mapping.timestamp_format
    if raw_type == "TIMESTAMP WITH TIME ZONE":
        return raw
    if raw_type.startswith("TIMESTAMP") or raw_type == "DATE":
        return f"timezone({zone}, CAST({raw} AS TIMESTAMP))"
    if fmt in ("unix_s", "unix_ms") or raw_type in {"BIGINT", "INTEGER", "DOUBLE", "HUGEINT", "FLOAT"}:
        scale = 1000.0 if fmt == "unix_ms" else 1.0
        seconds = f"TRY_CAST({raw} AS DOUBLE) / {scale}"
        return f"CASE WHEN isfinite({seconds}) AND abs({seconds}) < 1e11 THEN to_timestamp({seconds}) END"
    text = f"trim(CAST({raw} AS VARCHAR))"
    if fmt:
        return f"timezone({zone}, try_strptime({text}, {lit(fmt)}))"
    if mapping.timezone.upper() == "UTC":
        return f"TRY_CAST({text} AS TIMESTAMPTZ)"
    # A string with an explicit offset keeps it; a naive one is read in the mapping's zone.
    return (
        f"CASE WHEN regexp_matches({text}, '([zZ]|[+-][0-9]{{2}}(:?[0-9]{{2}})?)$') "
        f"THEN TRY_CAST({text} AS TIMESTAMPTZ) ELSE timezone({zone}, TRY_CAST({text} AS TIMESTAMP)) END"
    )


class _Builder:
    """Accumulates typed expressions and rules; one small method per kind of field."""

    def __init__(self, settings: Settings, mapping: Mapping, raw_types: dict[str, str]) -> None:
        self.settings = settings
        self.mapping = mapping
        self.raw_types = raw_types
        self.typed: dict[str, str] = {}
        self.rules: list[Rule] = []

    def present(self, field: str) -> bool:
        return field in self.raw_types

    def identifier(self, field: str, required: bool) -> None:
        expr = _text(field)
        self.typed[field] = expr
        if required:
            self.rules.append(Rule(field, f"{expr} IS NULL", lit(f"missing {field}")))
        limit = self.settings.ingest.max_id_length
        self.rules.append(Rule(field, f"length({expr}) > {limit}", lit(f"longer than {limit} characters")))

    def text(self, field: str, limit: int | None = None) -> None:
        expr = _text(field)
        self.typed[field] = expr
        cap = limit or self.settings.ingest.max_text_length
        self.rules.append(Rule(field, f"length({expr}) > {cap}", lit(f"longer than {cap} characters")))

    def number(self, field: str, default: float | None = None, minimum: str | None = None) -> None:
        text = _text(field)
        parsed = f"TRY_CAST({text} AS DOUBLE)"
        self.typed[field] = parsed if default is None else f"coalesce({parsed}, {default!r})"
        self.rules.append(Rule(field, f"{text} IS NOT NULL AND {parsed} IS NULL", lit("not a number")))
        self.rules.append(Rule(field, f"NOT isfinite({parsed})", lit("not a finite number")))
        if minimum == "positive":
            self.rules.append(Rule(field, f"{parsed} <= 0", lit("must be greater than 0")))
        elif minimum == "non_negative":
            self.rules.append(Rule(field, f"{parsed} < 0", lit("must not be negative")))

    def integer(self, field: str) -> None:
        text = _text(field)
        parsed = f"TRY_CAST({text} AS BIGINT)"
        self.typed[field] = parsed
        self.rules.append(Rule(field, f"{text} IS NOT NULL AND {parsed} IS NULL", lit("not a whole number")))
        self.rules.append(Rule(field, f"{parsed} < 0", lit("must not be negative")))

    def boolean(self, field: str) -> None:
        text = _text(field)
        parsed = f"TRY_CAST({text} AS BOOLEAN)"
        self.typed[field] = parsed
        reason = lit("not a boolean (true/false/1/0/yes/no)")
        self.rules.append(Rule(field, f"{text} IS NOT NULL AND {parsed} IS NULL", reason))

    def timestamp(self, field: str, required: bool) -> None:
        raw_type = self.raw_types.get(field, "VARCHAR")
        parsed = _timestamp(field, self.mapping, raw_type)
        self.typed[field] = parsed
        empty = f"{_text(field)} IS NULL" if raw_type == "VARCHAR" else f"{_raw(field)} IS NULL"
        if required:
            self.rules.append(Rule(field, empty, lit(f"missing {field}")))
        expected = self.mapping.timestamp_format or "ISO 8601, e.g. 2024-05-01T10:00:00Z"
        self.rules.append(
            Rule(field, f"NOT ({empty}) AND {parsed} IS NULL", lit(f"unparseable timestamp (expected {expected})"))
        )
        earliest = self.settings.ingest.min_timestamp
        latest = (datetime.now(UTC) + timedelta(seconds=self.settings.ingest.max_future_seconds)).isoformat()
        self.rules.append(Rule(field, f"{parsed} < TIMESTAMPTZ {lit(earliest)}", lit(f"before {earliest}")))
        self.rules.append(
            Rule(field, f"{parsed} > TIMESTAMPTZ {lit(latest)}", lit("in the future (after now + allowance)"))
        )

    def json_object(self, field: str, extra_json: str | None) -> None:
        text = _text(field) if self.present(field) else "NULL"
        parsed = f"TRY_CAST({text} AS JSON)"
        if extra_json is None:
            self.typed[field] = parsed
        else:
            self.typed[field] = f"json_merge_patch(coalesce({parsed}, '{{}}'::JSON), {extra_json})"
        if self.present(field):
            bad = f"{text} IS NOT NULL AND ({parsed} IS NULL OR json_type({parsed}) <> 'OBJECT')"
            self.rules.append(Rule(field, bad, lit("not a JSON object")))
            cap = self.settings.ingest.max_text_length
            self.rules.append(Rule(field, f"length({text}) > {cap}", lit(f"longer than {cap} characters")))

    def vocabulary(self, field: str, table: dict[str, str], what: str, required: bool) -> None:
        """Map a raw value through a small vocabulary; unknown values are errors, never dropped."""
        text = _text(field)
        key = f"lower({text})"
        cases = " ".join(f"WHEN {lit(src)} THEN {lit(dst)}" for src, dst in table.items())
        self.typed[field] = f"CASE {key} {cases} END" if table else "NULL"
        if required:
            self.rules.append(Rule(field, f"{text} IS NULL", lit(f"missing {what}")))
        known = ", ".join(sorted(set(table.values())))
        self.rules.append(
            Rule(field, f"{text} IS NOT NULL AND {self.typed[field]} IS NULL", lit(f"unknown {what} (known: {known})"))
        )


def plan_fields(
    kind: RecordKind, settings: Settings, mapping: Mapping, raw_types: dict[str, str], extra_json: str | None
) -> FieldPlan:
    """Build the typed expressions and rules for ``kind``.

    Args:
        raw_types: DuckDB type of each mapped field's raw column (``r_<field>``); fields
            absent from it are NULL for every row.
        extra_json: SQL building a JSON object of unmapped columns (``--extra keep``), or None.
    """
    b = _Builder(settings, mapping, raw_types)
    if kind is RecordKind.EVENTS:
        b.identifier("event_id", required=False)
        b.identifier("user_id", required=True)
        b.identifier("item_id", required=True)
        types = {k.lower(): v for k, v in mapping.type_values.items()}
        types.update({k: v for k, v in settings.event_types.canonical().items() if k not in types})
        b.vocabulary("type", types, "event type", required=True)
        b.timestamp("timestamp", required=True)
        b.vocabulary("channel", {c: c for c in settings.channels}, "channel", required=False)
        b.identifier("session_id", required=False)
        b.number("quantity", default=1.0, minimum="positive")
        b.number("value", minimum="non_negative")
        b.number("rating")
        b.json_object("context", extra_json)
    elif kind is RecordKind.ITEMS:
        b.identifier("item_id", required=True)
        b.text("title")
        b.text("description")
        b.text("category")
        sep = lit(mapping.category_separator)
        b.typed["category"] = (
            f"list_filter(list_transform(string_split({b.typed['category']}, {sep}), x -> NULLIF(trim(x), '')), "
            "x -> x IS NOT NULL)"
        )
        b.text("brand", limit=settings.ingest.max_id_length)
        b.number("price", minimum="non_negative")
        b.text("currency", limit=3)
        b.typed["currency"] = f"upper({b.typed['currency']})"
        b.rules.append(
            Rule("currency", f"NOT regexp_matches({b.typed['currency']}, '^[A-Z]{{3}}$')", lit("not an ISO 4217 code"))
        )
        b.boolean("available")
        b.integer("stock")
        b.json_object("attributes", extra_json)
        b.timestamp("first_seen", required=False)
    else:
        b.identifier("user_id", required=True)
        b.json_object("attributes", extra_json)
        b.timestamp("first_seen", required=False)
    return FieldPlan(typed=b.typed, rules=b.rules)
