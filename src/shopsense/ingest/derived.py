"""Derived fields at import: the columns they read, their types, and the row where one fails.

The expressions are checked by :mod:`shopsense.ingest.expressions`; here they meet the staged file
(:data:`~shopsense.ingest.source.STAGE`), whose columns they may read and nothing else.
"""

from __future__ import annotations

import duckdb

from shopsense.errors import InputError
from shopsense.ingest.expressions import ExpressionError, check_expression, match_columns
from shopsense.ingest.mapping import Mapping
from shopsense.ingest.source import ROW, STAGE


def derived_reads(source: str, columns: list[str], mapping: Mapping) -> set[str]:
    """The source columns the mapping's derived fields read; an expression naming another column is refused."""
    reads: set[str] = set()
    for field_name, expression in mapping.derived.items():
        try:
            reads |= set(match_columns(check_expression(expression), columns).values())
        except ExpressionError as exc:
            raise InputError(source, f"derived field {field_name} = {expression!r}: {exc}") from None
    return reads


def derived_type(con: duckdb.DuckDBPyConnection, source: str, field_name: str, expression: str) -> str:
    """The DuckDB type of a derived field over the staged file: binding errors (a function given the wrong
    types, a text column used as a number) are named here, before any row is evaluated."""
    try:
        (row,) = con.execute(f"DESCRIBE SELECT ({expression}) AS v FROM {STAGE}").fetchall()
    except duckdb.Error as exc:
        raise InputError(source, f"derived field {field_name} = {expression!r} cannot be used: {_first(exc)}") from exc
    return str(row[1])


def derived_failure(con: duckdb.DuckDBPyConnection, mapping: Mapping, exc: duckdb.Error) -> str:
    """Which derived field failed on which row, found by halving the rows (on this error path only)."""
    for field_name, expression in mapping.derived.items():
        probe = f"SELECT count(({expression})) FROM {STAGE} WHERE {ROW} BETWEEN $1 AND $2"
        (last,) = con.execute(f"SELECT coalesce(max({ROW}), 0) FROM {STAGE}").fetchone() or (0,)
        low, high = 1, int(last)
        error: duckdb.Error | None = None
        try:
            con.execute(probe, [low, high]).fetchall()
            continue
        except duckdb.Error as failed:
            error = failed
        while low < high:
            middle = (low + high) // 2
            try:
                con.execute(probe, [low, middle]).fetchall()
                low = middle + 1
            except duckdb.Error as failed:
                error, high = failed, middle
        return (
            f"derived field {field_name} = {expression!r} fails at row {low}: {_first(error)} (TRY_CAST instead of "
            "CAST makes such a value NULL, which the field's own checks then report row by row)"
        )
    return f"a derived field failed: {_first(exc)}"


def derived_hints(mapping: Mapping, counts: dict[str, int]) -> list[str]:
    """For each derived field whose values failed the field's own checks, the expression that gave them: a problem
    line shows only the field and the value, which is not in the file.

    Args:
        counts: failing rows per ``"field: reason"``, as the importer counts them.
    """
    failing = {key.partition(": ")[0] for key, n in counts.items() if n}
    return [
        f"{name}: the values shown are what derived field {name} = {expression!r} gives; correct the expression "
        "(or the columns it reads) in the mapping"
        for name, expression in mapping.derived.items()
        if name in failing
    ]


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["derived_failure", "derived_hints", "derived_reads", "derived_type"]
