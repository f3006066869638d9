"""Validation rules as SQL, so a 10M-row file is checked in one columnar pass.

Each field has a *typed* expression (what gets stored) and rules (condition + reason)
over the raw value. Rules are evaluated by DuckDB; Python only assembles the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from shopsense.domain import BAD_ID, FORBIDDEN_ID_RANGES, MAX_JSON_DEPTH, TOO_DEEP, RecordKind
from shopsense.errors import ConfigError
from shopsense.ingest.mapping import Mapping, ZeroQuantity
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


class Hint(StrEnum):
    """Failures the importer can explain further by looking at the failing values."""

    NONE = ""
    TIMESTAMP = "timestamp"  # unparseable: guess a --timestamp-format from the values
    VOCABULARY = "vocabulary"  # unknown type/channel: point at the value mapping and the setting


@dataclass(frozen=True)
class Rule:
    """One check: rows where the SQL ``condition`` holds are bad for ``reason``."""

    column: str
    condition: str
    reason: str
    hint: Hint = Hint.NONE


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


ZERO_QUANTITY = "is 0 (pass --zero-quantity keep or drop, or set zero_quantity, to accept such rows)"
"""Why an event with quantity 0 is rejected under the default zero-quantity policy."""

LINE = "line"
"""The pseudo-field of a line the reader refused as a whole: its raw column ``r_line`` holds the line's
start, NULL on every line that was read."""
LINE_DEPTH = MAX_JSON_DEPTH - 1
"""Deepest a JSON line may nest: DuckDB's reader refuses a value more than :data:`MAX_JSON_DEPTH` levels
down, and the values inside the innermost brackets are one level below them."""
LINE_TOO_DEEP = f"the line is JSON nested deeper than {LINE_DEPTH} levels, more than the JSON Lines reader takes"


def refuse_unread_lines(plan: FieldPlan) -> FieldPlan:
    """``plan`` for staged data holding lines the reader refused (too deep, see ``ingest.source``).

    Such a line fails on its own rule, with its number, and on no other: its fields, all NULL, are not
    reported missing as well.
    """
    read = f"{_raw(LINE)} IS NULL"
    rules = [replace(rule, condition=f"({read} AND {rule.condition})") for rule in plan.rules]
    return FieldPlan(plan.typed, [*rules, Rule(LINE, f"NOT {read}", LINE_TOO_DEEP)])


_NUMERIC = {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "DOUBLE", "FLOAT"}


def _raw(field: str) -> str:
    return ident(f"r_{field}")


_BAD_ID_CLASS = "[" + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in FORBIDDEN_ID_RANGES) + "]"
"""An RE2 class of the characters ids may not hold (:data:`shopsense.domain.FORBIDDEN_ID_RANGES`)."""


def too_deep_sql(json_text: str, limit: int = MAX_JSON_DEPTH) -> str:
    """SQL true when the JSON text ``json_text`` nests deeper than ``limit``, in whole-column string work.

    Only a text with more than ``limit`` opening brackets can be that deep, and that test is cheap;
    for those, strings are cut out, everything but brackets dropped, and each round of removing the
    innermost ``[]``/``{}`` pairs lowers the depth by one: after ``limit`` rounds only a deeper text
    has brackets left.
    """
    openers = f"(length({json_text}) - length(replace(replace({json_text}, '{{', ''), '[', '')))"
    brackets = (
        f"""regexp_replace(regexp_replace({json_text}, '"(?:[^"\\\\]|\\\\.)*"', '', 'g'), '[^\\[\\]{{}}]', '', 'g')"""
    )
    rounds = brackets
    for _ in range(limit):
        rounds = f"regexp_replace({rounds}, '\\[\\]|\\{{\\}}', '', 'g')"
    return (
        f"(CASE WHEN strlen({json_text}) <= {2 * limit} THEN FALSE "  # too short to hold limit + 1 bracket pairs
        f"WHEN {openers} > {limit} THEN {rounds} <> '' ELSE FALSE END)"
    )


def _timestamp(field: str, mapping: Mapping, raw_type: str) -> str:
    """Parse a raw value into TIMESTAMPTZ (UTC) following the mapping's format and zone."""
    raw = _raw(field)
    zone = lit(mapping.timezone)
    fmt = mapping.timestamp_format
    if raw_type == "TIMESTAMP WITH TIME ZONE":
        return raw
    if raw_type.startswith("TIMESTAMP") or raw_type == "DATE":
        return f"timezone({zone}, CAST({raw} AS TIMESTAMP))"
    if fmt in ("unix_s", "unix_ms") or raw_type in _NUMERIC or raw_type.startswith("DECIMAL"):
        scale = 1000.0 if fmt == "unix_ms" else 1.0
        seconds = f"(TRY_CAST({raw} AS DOUBLE) / {scale})"
        return f"CASE WHEN isfinite({seconds}) AND abs({seconds}) < 1e11 THEN to_timestamp({seconds}) END"
    text = f"trim(CAST({raw} AS VARCHAR))"
    if fmt and ("%z" in fmt or "%Z" in fmt):
        return f"try_strptime({text}, {lit(fmt)})"  # the offset in each value decides; the zone does not apply
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
    """Accumulates typed expressions (over raw ``r_<field>`` columns) and rules.

    Rules refer to the typed column by its field name and to the raw one as ``r_<field>``,
    so each value is parsed once per row however many rules look at it.
    """

    def __init__(self, settings: Settings, mapping: Mapping, raw_types: dict[str, str]) -> None:
        self.settings = settings
        self.mapping = mapping
        self.raw_types = raw_types
        self.typed: dict[str, str] = {}
        self.rules: list[Rule] = []

    def present(self, field: str) -> bool:
        return field in self.raw_types

    def _is_text(self, field: str) -> bool:
        return self.raw_types.get(field, "VARCHAR") == "VARCHAR"

    def _blank(self, field: str) -> str:
        """Raw value absent: NULL, or only whitespace for text columns."""
        raw = _raw(field)
        return f"({raw} IS NULL OR trim({raw}) = '')" if self._is_text(field) else f"({raw} IS NULL)"

    def _string(self, field: str) -> str:
        raw = _raw(field)
        return f"NULLIF(trim({raw}), '')" if self._is_text(field) else f"CAST({raw} AS VARCHAR)"

    def identifier(self, field: str, required: bool) -> None:
        """An id: trimmed, in Unicode NFC (as the API stores it), free of control, bidi and zero-width characters."""
        self.text(field, limit=self.settings.ingest.max_id_length)
        self.typed[field] = f"nfc_normalize({self.typed[field]})"
        if required:
            self.rules.append(Rule(field, f"{ident(field)} IS NULL", f"missing {field}"))
        if self.present(field):
            self.rules.append(Rule(field, f"regexp_matches({ident(field)}, {lit(_BAD_ID_CLASS)})", BAD_ID))

    def text(self, field: str, limit: int | None = None) -> None:
        self.typed[field] = self._string(field)
        if not self.present(field):
            return
        cap = limit or self.settings.ingest.max_text_length
        self.rules.append(Rule(field, f"length({ident(field)}) > {cap}", f"longer than {cap} characters"))

    def category(self, field: str, separator: str) -> None:
        """A category path: a list column as is, or text split on the separator (empty levels dropped)."""
        raw = _raw(field)
        if self.raw_types.get(field, "VARCHAR").endswith("[]"):
            self.typed[field] = f"CAST({raw} AS VARCHAR[])"
            return
        self.typed[field] = (
            f"list_filter(list_transform(string_split({self._string(field)}, {lit(separator)}), "
            "lambda x: NULLIF(trim(x), '')), lambda x: x IS NOT NULL)"
        )
        if self.present(field):
            cap = self.settings.ingest.max_text_length
            self.rules.append(Rule(field, f"length(CAST({raw} AS VARCHAR)) > {cap}", f"longer than {cap} characters"))

    def _parsed(self, field: str, sql_type: str) -> str:
        return f"TRY_CAST({_raw(field)} AS {sql_type})"

    def _unparseable(self, field: str, sql_type: str, what: str) -> None:
        if self.present(field) and self._is_text(field):
            cond = f"NOT {self._blank(field)} AND TRY_CAST({_raw(field)} AS {sql_type}) IS NULL"
            self.rules.append(Rule(field, cond, what))

    def number(self, field: str, default: float | None = None, minimum: str | None = None) -> None:
        parsed = self._parsed(field, "DOUBLE")
        self.typed[field] = parsed if default is None else f"coalesce({parsed}, {default!r})"
        if not self.present(field):
            return
        col = ident(field)
        self._unparseable(field, "DOUBLE", "not a number")
        self.rules.append(Rule(field, f"NOT isfinite({col})", "not a finite number"))
        if minimum == "positive":
            self.rules.append(Rule(field, f"{col} <= 0", "must be greater than 0"))
        elif minimum == "non_negative":
            self.rules.append(Rule(field, f"{col} < 0", "must not be negative"))

    def quantity(self, zero: ZeroQuantity) -> None:
        """An event's quantity (1 when absent): negative is an error; 0 as the zero-quantity policy says."""
        self.number("quantity", default=1.0, minimum="non_negative" if zero is not ZeroQuantity.ERROR else None)
        if not self.present("quantity") or zero is not ZeroQuantity.ERROR:
            return
        col = ident("quantity")
        self.rules.append(Rule("quantity", f"{col} < 0", "must be greater than 0"))
        self.rules.append(Rule("quantity", f"{col} = 0", ZERO_QUANTITY))

    def integer(self, field: str) -> None:
        self.typed[field] = self._parsed(field, "BIGINT")
        if not self.present(field):
            return
        self._unparseable(field, "BIGINT", "not a whole number")
        self.rules.append(Rule(field, f"{ident(field)} < 0", "must not be negative"))

    def boolean(self, field: str) -> None:
        self.typed[field] = self._parsed(field, "BOOLEAN")
        self._unparseable(field, "BOOLEAN", "not a boolean (true/false/1/0/yes/no)")

    def timestamp(self, field: str, required: bool) -> None:
        raw_type = self.raw_types.get(field, "VARCHAR")
        self.typed[field] = _timestamp(field, self.mapping, raw_type)
        col = ident(field)
        if required:
            self.rules.append(Rule(field, self._blank(field), f"missing {field}"))
        if not self.present(field):
            return
        expected = self.mapping.timestamp_format or "ISO 8601, e.g. 2024-05-01T10:00:00Z"
        cond = f"NOT {self._blank(field)} AND {col} IS NULL"
        self.rules.append(Rule(field, cond, f"unparseable timestamp (expected {expected})", Hint.TIMESTAMP))
        earliest = self.settings.ingest.min_timestamp
        latest = (datetime.now(UTC) + timedelta(seconds=self.settings.ingest.max_future_seconds)).isoformat()
        self.rules.append(Rule(field, f"{col} < TIMESTAMPTZ {lit(earliest)}", f"before {earliest}"))
        self.rules.append(Rule(field, f"{col} > TIMESTAMPTZ {lit(latest)}", "in the future (after now + allowance)"))

    def json_object(self, field: str, extra_json: str | None) -> None:
        parsed = self._parsed(field, "JSON") if self.present(field) else "CAST(NULL AS JSON)"
        if self.raw_types.get(field, "").startswith(("STRUCT", "MAP")):
            # Readers widen objects with differing keys to one struct, filling absent keys with
            # NULL; a merge patch drops those again, so {"a": 1} does not come back as {"a": 1, "b": null}.
            parsed = f"json_merge_patch('{{}}'::JSON, {parsed})"
        if extra_json is None:
            self.typed[field] = parsed
        else:
            self.typed[field] = f"json_merge_patch(coalesce({parsed}, '{{}}'::JSON), {extra_json})"
        if self.present(field):
            raw_json = f"TRY_CAST({_raw(field)} AS JSON)"
            bad = f"NOT {self._blank(field)} AND ({raw_json} IS NULL OR json_type({raw_json}) <> 'OBJECT')"
            self.rules.append(Rule(field, bad, "not a JSON object"))
            cap = self.settings.ingest.max_text_length
            cond = f"length(CAST({_raw(field)} AS VARCHAR)) > {cap}"
            self.rules.append(Rule(field, cond, f"longer than {cap} characters"))
            # Text is measured as given (not parsed again); a typed column as its JSON text.
            text = _raw(field) if self._is_text(field) else f"CAST({raw_json} AS VARCHAR)"
            self.rules.append(Rule(field, too_deep_sql(text), TOO_DEEP))

    def vocabulary(self, field: str, table: dict[str, str], what: str, required: bool) -> None:
        """Map a raw value through a small vocabulary; unknown values are errors, never dropped."""
        key = f"lower({self._string(field)})"
        cases = " ".join(f"WHEN {lit(src)} THEN {lit(dst)}" for src, dst in table.items())
        self.typed[field] = f"CASE {key} {cases} END" if table and self.present(field) else "CAST(NULL AS VARCHAR)"
        if required:
            self.rules.append(Rule(field, self._blank(field), f"missing {what}"))
        if self.present(field):
            known = ", ".join(sorted(set(table.values())))
            cond = f"NOT {self._blank(field)} AND {ident(field)} IS NULL"
            self.rules.append(Rule(field, cond, f"unknown {what} (known: {known})", Hint.VOCABULARY))


def vocabulary(known: dict[str, str], given: dict[str, str], option: str, what: str) -> dict[str, str]:
    """Accepted spelling (lower-case) -> stored value: ``known`` plus the user's ``given`` value mapping.

    A mapping target must itself be known (an alias is resolved), so a typo in ``--type-value`` or
    ``--channel-value`` is refused instead of storing a type or channel nothing else understands.
    """
    spellings = {k.lower(): v for k, v in known.items()}
    table = dict(spellings)
    for source, target in given.items():
        if target.strip().lower() not in spellings:
            choices = ", ".join(sorted(set(spellings.values())))
            raise ConfigError(f"{option} {source}={target}: {target!r} is not a known {what} (known: {choices})")
        table[source.strip().lower()] = spellings[target.strip().lower()]
    return table


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
        types = vocabulary(
            settings.event_types.canonical(), mapping.type_values, "--type-value/[type_values]", "event type"
        )
        b.vocabulary("type", types, "event type", required=True)
        b.timestamp("timestamp", required=True)
        channels = vocabulary(
            {c: c for c in settings.channels}, mapping.channel_values, "--channel-value/[channel_values]", "channel"
        )
        b.vocabulary("channel", channels, "channel", required=False)
        b.identifier("session_id", required=False)
        b.quantity(ZeroQuantity(mapping.zero_quantity or settings.ingest.zero_quantity))
        b.number("value", minimum="non_negative")
        b.number("rating")
        b.json_object("context", extra_json)
    elif kind is RecordKind.ITEMS:
        b.identifier("item_id", required=True)
        b.text("title")
        b.text("description")
        b.category("category", mapping.category_separator)
        b.text("brand", limit=settings.ingest.max_id_length)
        b.number("price", minimum="non_negative")
        b.typed["currency"] = f"upper({b._string('currency')})"
        if b.present("currency"):
            cond = "NOT regexp_matches(currency, '^[A-Z]{3}$')"
            b.rules.append(Rule("currency", cond, "not a 3-letter ISO 4217 code"))
        b.boolean("available")
        b.integer("stock")
        b.json_object("attributes", extra_json)
        b.timestamp("first_seen", required=False)
    else:
        b.identifier("user_id", required=True)
        b.json_object("attributes", extra_json)
        b.timestamp("first_seen", required=False)
    return FieldPlan(typed=b.typed, rules=b.rules)
