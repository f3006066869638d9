"""Derived fields: SQL expressions over a source file's own columns, checked before DuckDB runs them.

A mapping may compute a field instead of renaming a column::

    [derived]
    category = "concat_ws(' > ', dept, commodity, sub_commodity)"

The expression runs inside the import's one columnar pass, so it must be an expression and nothing
more. It is checked twice before any row is read:

1. DuckDB's tokenizer: no comment (which could hide the rest of the query) and no ``;``.
2. DuckDB's parser (``json_serialize_sql``): the text must parse as ``SELECT (<expr>)`` with exactly
   one item, no FROM, WHERE, GROUP BY, CTE or modifier; every node of the expression tree must be a
   constant, a column of the file, a cast, a comparison, ``AND``/``OR``/``NOT``, ``CASE``,
   ``BETWEEN``, ``IN``/``IS NULL``/``COALESCE`` or a call of an allow-listed scalar function.
   Subqueries, window functions, lambdas, parameters, ``*``, schema-qualified names, method calls
   (``a.lower()``), widths that are not small literals (``lpad(a, 2000000000, 'x')``) and every
   function not on the list (file readers such as ``read_csv``/``read_text``, ``getenv``,
   ``current_setting``, aggregates) are refused; statements other than SELECT (PRAGMA, COPY,
   ATTACH, SET) do not parse as one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb

ALLOWED_FUNCTIONS = frozenset(
    {
        # operators (DuckDB parses them as functions)
        "+", "-", "*", "/", "//", "%", "**", "^", "||", "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~",
        # text
        "concat", "concat_ws", "lower", "upper", "lcase", "ucase", "trim", "ltrim", "rtrim", "substr",
        "substring", "left", "right", "replace", "regexp_replace", "regexp_extract", "regexp_matches",
        "split_part", "string_split", "length", "strlen", "lpad", "rpad", "starts_with", "ends_with",
        "contains", "prefix", "suffix", "nullif", "ifnull", "if", "reverse",
        "strip_accents", "nfc_normalize", "list_value", "array_value", "list_extract", "list_element",
        "struct_pack", "json_object", "json_array", "to_json",
        # numbers
        "abs", "round", "floor", "ceil", "ceiling", "trunc", "greatest", "least", "sign", "sqrt", "ln",
        "log", "log10", "log2", "exp", "pow", "power", "mod", "isfinite", "isnan",
        # time
        "to_timestamp", "make_timestamp", "make_timestamptz", "make_date", "make_time", "strptime",
        "try_strptime", "strftime", "date_trunc", "date_part", "datepart", "date_diff", "datediff",
        "date_add", "epoch", "epoch_ms", "to_years", "to_months", "to_weeks", "to_days", "to_hours",
        "to_minutes", "to_seconds", "to_milliseconds", "to_microseconds", "timezone", "year", "month",
        "day", "hour", "minute", "second", "dayofweek", "isodow",
    }
)  # fmt: skip
"""Scalar functions a derived field may call: pure functions of their arguments (no file, network,
environment or catalogue access, no aggregates) whose result is no larger than their inputs and the
expression's own text. Functions that pad to a width take it as a literal of at most :data:`MAX_WIDTH`;
``repeat``, ``format`` and ``printf`` (widths inside a format string, ``%*s``) are left out, so that no
expression can ask for gigabytes per row."""

MAX_WIDTH = 10_000
"""The largest literal width ``lpad``/``rpad`` may pad to."""
_WIDTH_ARGUMENT = {"lpad": 1, "rpad": 1}
"""Functions whose result is as wide as one argument (by position) says: it must be a small literal."""

_ALLOWED_NODES = frozenset(
    {"CONSTANT", "COLUMN_REF", "FUNCTION", "OPERATOR", "CASE", "CAST", "COMPARISON", "CONJUNCTION", "BETWEEN", "TYPE"}
)
_REFUSED_OPERATORS = frozenset({"OPERATOR_UNPACK"})
_NODE_NAMES = {
    "SUBQUERY": "a subquery",
    "WINDOW": "a window function",
    "LAMBDA": "a lambda",
    "PARAMETER": "a parameter",
    "STAR": "*",
    "COLUMNS": "COLUMNS(*)",
    "COLLATE": "COLLATE",
}


class ExpressionError(ValueError):
    """A derived field's expression is refused; the message says why (the caller adds field and text)."""


@dataclass(frozen=True)
class Derived:
    """A checked expression: its text and the source columns it reads (as the expression spells them)."""

    sql: str
    columns: frozenset[str]


def check_expression(text: str) -> Derived:
    """Parse ``text`` with DuckDB and refuse anything but a pure expression over columns.

    Raises:
        ExpressionError: a comment, ``;``, a statement, a subquery, a FROM clause, a function not in
            :data:`ALLOWED_FUNCTIONS`, or text that is no expression.
    """
    if not text.strip():
        raise ExpressionError("the expression is empty")
    try:
        tokens = duckdb.tokenize(text)
    except Exception as exc:  # the tokenizer raises plain RuntimeErrors on odd bytes
        raise ExpressionError(f"it cannot be read as SQL: {exc}") from None
    for start, kind in tokens:
        if kind == duckdb.token_type.comment:
            raise ExpressionError("comments are not allowed in an expression")
        if kind == duckdb.token_type.operator and text[start] == ";":
            raise ExpressionError("';' is not allowed: one expression, not statements")
    tree = _parse(f"SELECT ({text})")
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise ExpressionError("it must be one expression, not several statements")
    node = statements[0].get("node", {})
    if node.get("type") != "SELECT_NODE":
        raise ExpressionError("it must be one expression, not a query")
    select = node.get("select_list", [])
    extras = [
        node.get("where_clause"),
        node.get("having"),
        node.get("qualify"),
        node.get("sample"),
        node.get("group_expressions"),
        node.get("group_sets"),
        node.get("modifiers"),
        (node.get("cte_map") or {}).get("map"),
    ]
    if len(select) != 1 or any(extras) or (node.get("from_table") or {}).get("type") != "EMPTY":
        raise ExpressionError("it must be one expression over the file's columns (no FROM, WHERE, lists of values)")
    columns: set[str] = set()
    _walk(select[0], columns)
    return Derived(text, frozenset(columns))


def _parse(sql: str) -> dict[str, Any]:
    con = duckdb.connect()
    try:
        (raw,) = con.execute("SELECT json_serialize_sql($1)", [sql]).fetchone() or ("{}",)
    except duckdb.Error as exc:
        raise ExpressionError(f"it cannot be parsed: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    tree: dict[str, Any] = json.loads(raw)
    if tree.get("error"):
        message = str(tree.get("error_message", "")).splitlines()[0] if tree.get("error_message") else "syntax error"
        raise ExpressionError(f"it is not a valid expression: {message}")
    return tree


def _walk(node: Any, columns: set[str]) -> None:
    """Refuse every node outside the allow-list; collect the columns read."""
    if isinstance(node, list):
        for item in node:
            _walk(item, columns)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("class")
    if kind is not None:
        if kind not in _ALLOWED_NODES:
            raise ExpressionError(f"{_NODE_NAMES.get(kind, kind.lower())} is not allowed in a derived field")
        if kind == "OPERATOR" and node.get("type") in _REFUSED_OPERATORS:
            raise ExpressionError(f"{node.get('type', '').lower()} is not allowed in a derived field")
        if kind == "COLUMN_REF":
            names = node.get("column_names", [])
            if len(names) != 1:
                raise ExpressionError(f"{'.'.join(names)!r}: name a column of the file alone, without a table")
            columns.add(names[0])
        if kind == "FUNCTION" and (node.get("schema") or node.get("catalog")):
            name = str(node.get("function_name", "")).lower()
            # `a.lower()` parses as `lower` in schema `a`, like `main.lower(a)`: neither may run
            raise ExpressionError(
                f"'{'.'.join(p for p in (node.get('catalog'), node.get('schema')) if p)}.{name}(…)': method calls "
                f"(column.function()) and names qualified by a schema are not allowed: write {name}(column, …)"
            )
        if kind == "TYPE" and (node.get("schema") or node.get("catalog")):
            raise ExpressionError("type names qualified by a schema or catalogue are not allowed")
        if kind == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name not in ALLOWED_FUNCTIONS:
                raise ExpressionError(
                    f"function {name!r} is not allowed in a derived field (allowed: scalar text, number and time "
                    "functions, e.g. concat_ws, lower, substr, regexp_replace, strptime, make_timestamp, to_minutes)"
                )
            if node.get("filter") or (node.get("order_bys") or {}).get("orders") or node.get("distinct"):
                raise ExpressionError(f"function {name!r}: FILTER, ORDER BY and DISTINCT are not allowed")
            if name in _WIDTH_ARGUMENT:
                _check_width(name, node.get("arguments") or [], _WIDTH_ARGUMENT[name])
    for key, value in node.items():
        if key not in ("qualified_name",):
            _walk(value, columns)


def _check_width(name: str, arguments: list[Any], position: int) -> None:
    """Refuse a width that is not a whole-number literal of at most :data:`MAX_WIDTH` (a memory bound per row)."""
    argument = arguments[position] if len(arguments) > position else {}
    expression = argument.get("expression", argument) if isinstance(argument, dict) else {}
    literal = (expression.get("literal") or {}) if expression.get("class") == "CONSTANT" else {}
    text = str(literal.get("text", "")) if isinstance(literal, dict) else ""
    if not text.isdigit() or int(text) > MAX_WIDTH:
        raise ExpressionError(
            f"function {name!r}: its width must be a whole number written out, at most {MAX_WIDTH:,} "
            f"(e.g. {name}(code, 6, '0'))"
        )


def match_columns(derived: Derived, source_columns: list[str]) -> dict[str, str]:
    """The source column each name in the expression reads (DuckDB matches names case-insensitively).

    Raises:
        ExpressionError: a name that is no column of the file.
    """
    by_lower = {c.lower(): c for c in source_columns}
    exact = set(source_columns)
    found: dict[str, str] = {}
    unknown = []
    for name in sorted(derived.columns):
        if name in exact:
            found[name] = name
        elif name.lower() in by_lower:
            found[name] = by_lower[name.lower()]
        else:
            unknown.append(name)
    if unknown:
        raise ExpressionError(
            f"unknown column(s) {', '.join(repr(u) for u in unknown)}: it may read only the file's columns "
            f"({', '.join(source_columns)})"
        )
    return found


__all__ = ["ALLOWED_FUNCTIONS", "Derived", "ExpressionError", "check_expression", "match_columns"]
