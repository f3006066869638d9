"""CSV cells a spreadsheet would run as formulas, neutralised on the way out and restored on the way in.

A text cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return becomes a formula
when the file is opened in Excel, LibreOffice or Google Sheets (OWASP "CSV injection"), so an id
such as ``=HYPERLINK("http://x")`` from a hostile source could run in a marketer's spreadsheet.
Every CSV shopsense writes therefore passes its text columns through :func:`neutralise`, which puts
a single quote in front of such a cell (``'=HYPERLINK(...)``); the spreadsheet shows the text as it
is. Numbers are not text and are left alone, so a negative price stays ``-2``.

``shopsense import`` undoes it for the CSV files it reads (:func:`restore_sql`): one leading ``'``
before one of those characters is dropped, so a ``shopsense export`` to ``.csv`` imports back exactly.
To keep that exact for text that really starts with quotes (``'=x``), a cell of quotes followed by
such a character gets one more quote on the way out, and loses one on the way in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from uuid import uuid4

import pyarrow as pa

from shopsense.ingest.validate import ident, lit

if TYPE_CHECKING:
    import duckdb

FORMULA_START = "=+\\-@\t\r"
"""The characters (a regex character-class body) that make a spreadsheet read a cell as a formula."""

_NEEDS_QUOTE = f"^'*[{FORMULA_START}]"
"""A cell the writer quotes: a formula start, possibly behind quotes already there (so reading back is exact)."""

_QUOTED = f"^'+[{FORMULA_START}]"
"""A cell the reader unquotes: what :func:`neutralise` makes of a cell (one quote is dropped)."""


def neutralise(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A text column with a ``'`` in front of each cell that a spreadsheet would run as a formula."""
    import pyarrow.compute as pc

    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if pa.types.is_string_view(values.type):
        values = values.cast(pa.string())
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return values
    quote, nothing = pa.scalar("'", values.type), pa.scalar("", values.type)
    quoted = pc.binary_join_element_wise(quote, values, nothing)
    return pc.if_else(pc.match_substring_regex(values, _NEEDS_QUOTE), quoted, values)


def _is_text(field: pa.Field) -> bool:
    kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def neutralise_table(table: pa.Table) -> pa.Table:
    """``table`` with :func:`neutralise` applied to every text column; other columns are untouched."""
    for i, field in enumerate(table.schema):
        if _is_text(field):
            column = neutralise(table.column(i))
            table = table.set_column(i, pa.field(field.name, column.type, field.nullable, field.metadata), column)
    return table


@contextmanager
def neutralised_query(con: duckdb.DuckDBPyConnection, query: str) -> Iterator[str]:
    """``query`` with :func:`neutralise` applied to its VARCHAR columns, for a DuckDB ``COPY ... (FORMAT csv)``.

    :func:`neutralise` is registered on ``con`` as a vectorised (Arrow) function under a name of its
    own for the duration of the ``with`` block, so two exports on one connection do not meet.
    """
    from duckdb import func, sqltypes

    columns = con.execute(f"DESCRIBE {query}").fetchall()
    text = [str(name) for name, kind, *_ in columns if kind == "VARCHAR"]
    if not text:
        yield query
        return
    name = f"shopsense_csv_safe_{uuid4().hex}"
    con.create_function(
        name,
        neutralise,
        [sqltypes.VARCHAR],
        sqltypes.VARCHAR,
        type=func.PythonUDFType.ARROW,
        null_handling=func.FunctionNullHandling.SPECIAL,
        side_effects=False,
    )
    try:
        replaced = ", ".join(f"{name}({ident(c)}) AS {ident(c)}" for c in text)
        yield f"SELECT * REPLACE ({replaced}) FROM ({query})"
    finally:
        con.remove_function(name)


def restore_sql(column: str) -> str:
    """SQL (DuckDB) for a text ``column`` read from CSV with the quote :func:`neutralise` added taken off again."""
    test = f"starts_with({column}, '''') AND regexp_matches({column}, {lit(_QUOTED)})"  # cheap test first
    return f"CASE WHEN {test} THEN substr({column}, 2) ELSE {column} END"


__all__ = ["FORMULA_START", "neutralise", "neutralise_table", "neutralised_query", "restore_sql"]
