"""Read a CSV, Parquet or JSON Lines file into a staging table, with clear errors.

Text files are read once, by DuckDB, into a temporary table whose row order is the file's,
so ``rowid + 1`` is the data-row number every problem report points at; Parquet files are
read in place (they number their rows). Either way ``stage_raw`` is a view with the
source's columns plus ``__row``. A CSV cell that ``shopsense`` wrote as ``'=x`` (a formula start
neutralised for spreadsheets, see :mod:`shopsense.csv_safety`) reads back as ``=x``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import duckdb

from shopsense.csv_safety import restore_sql
from shopsense.errors import ConfigError, InputError
from shopsense.ingest.validate import ident, lit

STAGE = "stage_raw"
ROW = "__row"
_DATA = "stage_data"


class Format(StrEnum):
    """Input file formats shopsense reads."""

    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"


_SUFFIXES = {
    ".csv": Format.CSV,
    ".tsv": Format.CSV,
    ".txt": Format.CSV,
    ".dat": Format.CSV,
    ".parquet": Format.PARQUET,
    ".pq": Format.PARQUET,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".json": Format.JSONL,
}


def detect_format(path: Path) -> Format:
    """Pick the reader from the file name (``.gz``/``.zst`` compression is looked through)."""
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".zst", ".gzip"):
        suffixes.pop()
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]
    raise InputError(
        str(path), "unknown file type; name it .csv, .parquet or .jsonl (optionally .gz), or pass --format"
    )


_EXPORTS = {".parquet": Format.PARQUET, ".csv": Format.CSV, ".jsonl": Format.JSONL, ".ndjson": Format.JSONL}


def export_format(path: Path) -> tuple[Format, bool]:
    """The format an export file's name asks for, and whether to gzip it.

    Only names that ``detect_format`` reads back as the same format are accepted, so an
    export always re-imports; anything else is refused rather than written under a wrong name.
    """
    suffixes = [s.lower() for s in path.suffixes]
    gzip = suffixes[-1:] == [".gz"]
    if gzip:
        suffixes.pop()
    fmt = _EXPORTS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (gzip and fmt is Format.PARQUET):
        raise ConfigError(
            f"cannot tell the export format from the name {path.name!r}: end it in .parquet, .csv, .jsonl or "
            ".ndjson (.csv.gz, .jsonl.gz to compress)"
        )
    return fmt, gzip


def _reader_sql(path: Path, fmt: Format, delimiter: str | None, encoding: str, max_line: int) -> str:
    p = lit(str(path))
    if fmt is Format.PARQUET:
        return f"read_parquet({p}, file_row_number=true)"
    if fmt is Format.JSONL:
        return (
            f"read_json({p}, format='newline_delimited', records=true, maximum_object_size={max_line}, sample_size=-1)"
        )
    delim = f", delim={lit(delimiter)}" if delimiter else ""
    return (
        f"read_csv({p}, header=true, all_varchar=true, strict_mode=true, quote='\"', escape='\"', "
        f"encoding={lit(encoding)}, "
        f"max_line_size={max_line}{delim})"
    )


def _explain(path: Path, exc: duckdb.Error) -> str:
    """Turn a DuckDB reader error into one plain sentence with the line when known."""
    text = str(exc)
    line = re.search(r"on Line: (\d+)", text)
    at = f" (line {line.group(1)})" if line else ""
    if "GZIP" in text or "gzip" in text:
        return "the gzip stream is truncated or corrupt; re-copy the file"
    if "unicode" in text.lower() or "utf-8" in text.lower():
        return f"not valid UTF-8{at}; pass --encoding latin-1 (or utf-16) if that is the file's encoding"
    if "maximum line size" in text.lower() or "max_line_size" in text:
        return f"a line is longer than the {_max_hint(text)} limit{at}; a field is probably unterminated or huge"
    if "Expected Number of Columns" in text or "columns" in text.lower():
        return f"rows have different numbers of fields{at}; check the delimiter and quoting"
    if "maximum_object_size" in text or "object" in text.lower():
        return f"a JSON object is malformed or larger than the limit{at}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot be read{at}: {first}"


def _max_hint(text: str) -> str:
    found = re.search(r"(\d{4,}) bytes", text)
    return f"{found.group(1)}-byte" if found else "maximum line"


def stage_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: Format,
    *,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    max_line_bytes: int = 2_097_152,
) -> list[str]:
    """Read ``path`` into the temporary table ``stage_raw`` and return its column names.

    Raises:
        InputError: the file is missing, empty, compressed badly, wrongly encoded, ragged,
            or has no data rows — with the line number when the reader gives one.
    """
    name = str(path)
    if path.is_dir():
        raise InputError(name, "is a folder, not a file; give the path of one file")
    if not path.is_file():
        raise InputError(name, "no such file")
    if path.stat().st_size == 0:
        raise InputError(name, "the file is empty (0 bytes)")
    reader = _reader_sql(path, fmt, delimiter, encoding, max_line_bytes)
    try:
        if fmt is Format.PARQUET:
            _drop(con)
            con.execute(
                f"CREATE TEMP VIEW {STAGE} AS SELECT file_row_number + 1 AS {ROW}, * EXCLUDE (file_row_number) "
                f"FROM {reader}"
            )
        elif fmt is Format.CSV:  # every column is text: drop the quote a CSV writer put before a formula start
            _materialise(con, f"SELECT {restore_sql('COLUMNS(*)')} FROM {reader}")
        else:
            _materialise(con, f"SELECT * FROM {reader}")
    except duckdb.Error as exc:
        raise InputError(name, _explain(path, exc)) from exc
    columns = list(column_types(con))
    (rows,) = con.execute(f"SELECT count(*) FROM {STAGE}").fetchall()
    if fmt is Format.CSV and len(columns) == 1 and re.search(r"[,;|\t]", columns[0]):
        raise InputError(
            name,
            f"the header {columns[0][:80]!r} did not split into columns: rows have different numbers of "
            "fields or the delimiter is unusual; pass --delimiter",
        )
    if fmt is Format.CSV and columns == ["column0"] and rows and rows[0] == 0:
        raise InputError(name, "the file has no header and no rows")
    if not rows or rows[0] == 0:
        raise InputError(name, f"the file has a header ({', '.join(columns)}) but no data rows")
    return columns


def stage_query(con: duckdb.DuckDBPyConnection, sql: str, label: str) -> list[str]:
    """Stage the result of an adapter's SQL (which reads its files itself) as ``stage_raw``."""
    try:
        _materialise(con, sql)
    except duckdb.Error as exc:
        raise InputError(label, _explain(Path(label), exc)) from exc
    return list(column_types(con))


def stage_table(con: duckdb.DuckDBPyConnection, name: str, sql: str, label: str) -> None:
    """Materialise a table an adapter's steps share (its files are then read only once)."""
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ident(name)} AS {sql}")
    except duckdb.Error as exc:
        raise InputError(label, _explain(Path(label), exc)) from exc


def _drop(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"DROP VIEW IF EXISTS {STAGE}")
    con.execute(f"DROP TABLE IF EXISTS {_DATA}")


def _materialise(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Read a query once into a table (file order kept) and expose it numbered as ``stage_raw``."""
    _drop(con)
    con.execute(f"CREATE TEMP TABLE {_DATA} AS {sql}")
    con.execute(f"CREATE TEMP VIEW {STAGE} AS SELECT rowid + 1 AS {ROW}, * FROM {_DATA}")


def release(con: duckdb.DuckDBPyConnection) -> None:
    """Free the staged raw data once it is no longer needed."""
    _drop(con)


def column_types(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Source column name -> DuckDB type of the staged data (the row number left out)."""
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {STAGE}").fetchall() if row[0] != ROW}


__all__ = [
    "ROW",
    "STAGE",
    "Format",
    "column_types",
    "detect_format",
    "export_format",
    "release",
    "stage_file",
    "stage_query",
    "stage_table",
]
