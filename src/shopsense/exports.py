"""Write a query's rows to the file a user names: format from the name, written whole or not at all.

Every export (a table of the store, a batch of recommendations) goes through here, so they accept
the same names (``.parquet``, ``.csv``, ``.jsonl``/``.ndjson``, ``.csv.gz``, ``.jsonl.gz``, all of
which ``shopsense import`` reads back), create missing folders the same way, and fail the same way.
A CSV's text cells that a spreadsheet would run as formulas get a leading ``'`` (see
:mod:`shopsense.csv_safety`), which ``shopsense import`` drops again, so a CSV export still imports back exactly.
"""

from __future__ import annotations

from contextlib import ExitStack, suppress
from pathlib import Path

import duckdb

from shopsense.csv_safety import neutralised_query
from shopsense.errors import StoreError
from shopsense.ingest.source import Format, export_format

_OPTIONS = {
    Format.PARQUET: "FORMAT parquet, COMPRESSION zstd",
    Format.CSV: "FORMAT csv, HEADER",
    Format.JSONL: "FORMAT json",
}
"""DuckDB COPY options per format (JSON: one object per line)."""


def copy_to_file(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> int:
    """Run ``COPY (query)`` into ``path`` and return the rows written.

    The rows go to ``<path>.partial`` first and are renamed when complete, so a reader (or a crash)
    never sees half a file. In a CSV, text cells starting like a formula (``=``, ``+``, ``-``, ``@``, tab,
    carriage return) are written with a leading ``'`` (:mod:`shopsense.csv_safety`).

    Raises:
        ConfigError: the name asks for no format shopsense can read back.
        StoreError: the file cannot be written (no permission, disk full, a folder in the way).
    """
    fmt, gzip = export_format(path)
    options = _OPTIONS[fmt] + ("" if fmt is Format.PARQUET else f", COMPRESSION {'gzip' if gzip else 'none'}")
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            if fmt is Format.CSV:
                query = stack.enter_context(neutralised_query(con, query))
            target = str(partial).replace(chr(39), chr(39) * 2)
            row = con.execute(f"COPY ({query}) TO '{target}' ({options})").fetchone()
        partial.replace(path)
    except (duckdb.Error, OSError) as exc:
        with suppress(OSError):  # leave nothing half-written behind, if there is anything
            partial.unlink(missing_ok=True)
        reason = str(exc).strip().splitlines()[0] if isinstance(exc, duckdb.Error) else exc.strerror
        raise StoreError(f"cannot write {path}: {reason}") from exc
    return int(row[0]) if row else 0
