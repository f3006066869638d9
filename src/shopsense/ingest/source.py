"""Read a CSV, Parquet or JSON Lines file into a staging table, with clear errors.

Text files are read once, by DuckDB, into a temporary table whose row order is the file's,
so ``rowid + 1`` is the data-row number every problem report points at; Parquet files are
read in place (they number their rows). Either way ``stage_raw`` is a view with the
source's columns plus ``__row``. A JSON line the reader refuses as a whole (nested deeper
than :data:`~shopsense.ingest.validate.LINE_DEPTH`) does not sink the file: it is staged as a
row of NULL fields whose ``__unread`` column holds the line's start, for the importer to reject
on its own. A CSV cell that ``shopsense`` wrote as ``'=x`` (a formula start neutralised for
spreadsheets, see :mod:`shopsense.csv_safety`) reads back as ``=x``.
"""

from __future__ import annotations

import csv
import gzip
import re
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import IO

import duckdb
import numpy as np

from shopsense.csv_safety import restore_sql
from shopsense.errors import ConfigError, InputError
from shopsense.ingest.validate import LINE_DEPTH, LINE_TOO_DEEP, ident, lit, too_deep_sql

STAGE = "stage_raw"
ROW = "__row"
UNREAD = "__unread"
"""Staged column: the start of a JSON line the reader refused as a whole, NULL on every other row
(present only when some line was refused)."""
_DATA = "stage_data"
_TOO_DEEP_FOR_READER = "maximum recursion depth"


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


def _reader_sql(
    path: Path, fmt: Format, delimiter: str | None, encoding: str, max_line: int, header: bool = True
) -> str:
    p = lit(str(path))
    if fmt is Format.PARQUET:
        return f"read_parquet({p}, file_row_number=true)"
    if fmt is Format.JSONL:
        return (
            f"read_json({p}, format='newline_delimited', records=true, maximum_object_size={max_line}, sample_size=-1)"
        )
    delim = f", delim={lit(delimiter)}" if delimiter else ""
    # without a header, skip=0: the sniffer would otherwise take a first row of another width for a preamble
    first = "header=true" if header else "header=false, skip=0"
    return (
        f"read_csv({p}, {first}, all_varchar=true, strict_mode=true, quote='\"', escape='\"', "
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
        limit = re.search(r"line size of (\d+) bytes", text)
        found = _first_long_line(path, int(limit.group(1))) if limit else None
        at = f" (line {found})" if found else at
        return f"a line is longer than the {_max_hint(text)} limit{at}; a field is probably unterminated or huge"
    if "Expected Number of Columns" in text or "columns" in text.lower():
        return f"rows have different numbers of fields{at}; check the delimiter and quoting"
    if "maximum_object_size" in text or "object" in text.lower():
        return f"a JSON object is malformed or larger than the limit{at}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot be read{at}: {first}"


def _first_long_line(path: Path, limit: int) -> int | None:
    """The number of the first line of ``path`` longer than ``limit`` bytes, or None (unreadable, zstd).

    DuckDB's own report names line 1 for a long line anywhere in a CSV, so the file is scanned again,
    streamed in 16 MiB chunks whose newlines numpy finds.
    """
    suffix = path.suffix.lower()
    if suffix == ".zst":
        return None
    line, length = 1, 0  # length: bytes of the current line read so far
    try:
        with gzip.open(path, "rb") if suffix in (".gz", ".gzip") else path.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 0x0A)
                if ends.size:
                    spans = np.diff(ends, prepend=-1) - 1
                    spans[0] += length
                    over = np.flatnonzero(spans > limit)
                    if over.size:
                        return line + int(over[0])
                    line += int(ends.size)
                    length = len(chunk) - 1 - int(ends[-1])
                else:
                    length += len(chunk)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    return line if length > limit else None


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
    header: bool = True,
    names: list[str] | None = None,
) -> list[str]:
    """Read ``path`` into the temporary table ``stage_raw`` and return its column names.

    Args:
        header: whether a CSV file's first line names its columns; without one, the columns are
            ``column0``, ``column1``… or ``names``, and every line is a data row.
        names: the columns of a headerless CSV file, in order; the file must have exactly as many.

    Raises:
        InputError: the file is missing, empty, compressed badly, wrongly encoded, ragged,
            or has no data rows — with the line number when the reader gives one; a headerless
            file whose rows do not have as many fields as ``names``.
    """
    if not header and fmt is not Format.CSV:
        raise InputError(str(path), f"--no-header applies to CSV/TSV files; a {fmt.value} file names its own fields")
    name = str(path)
    if path.is_dir():
        raise InputError(name, "is a folder, not a file; give the path of one file")
    if not path.is_file():
        raise InputError(name, "no such file")
    if path.stat().st_size == 0:
        raise InputError(name, "the file is empty (0 bytes)")
    reader = _reader_sql(path, fmt, delimiter, encoding, max_line_bytes, header)
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
            try:
                _materialise(con, f"SELECT * FROM {reader}")
            except duckdb.Error as exc:
                if _TOO_DEEP_FOR_READER not in str(exc):
                    raise
                _stage_past_deep_lines(con, path, max_line_bytes)
    except duckdb.Error as exc:
        explained = _explain(path, exc)
        if not header:
            explained = _ragged_headerless(path, delimiter, encoding, names) or explained
        raise InputError(name, explained) from exc
    columns = list(column_types(con))
    if not header:
        return _name_headerless(con, path, columns, names or [], delimiter, encoding)
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


def _ragged_headerless(path: Path, delimiter: str | None, encoding: str, names: list[str] | None) -> str | None:
    """Where a headerless file's rows stop having the same number of fields: a sentence naming the row,
    or None when no such row is found.

    The reader only says that it could not make out the file's dialect, so the file is scanned again
    (on this error path only) by Python's CSV reader, with the delimiter given, or else the common one
    that splits row 1 into the most fields (into as many as ``names``, when given).
    """
    expected = len(names) if names else None
    try:
        with _text(path, encoding) as fh:
            first = fh.readline()
            if delimiter:
                chosen = delimiter
            else:
                counts = {d: len(next(csv.reader([first], delimiter=d), [])) for d in (",", "\t", ";", "|")}
                fitting = [d for d, n in counts.items() if n == expected] if expected else []
                chosen = fitting[0] if fitting else max(counts, key=lambda d: counts[d])
            fh.seek(0)
            width = None
            for number, row in enumerate(csv.reader(fh, delimiter=chosen), 1):
                if not row:
                    continue
                width = len(row) if width is None else width
                want = expected or width
                if len(row) != want:
                    return (
                        f"row {number} has {len(row)} field(s), but "
                        + (
                            f"--columns/source_columns names {want} ({', '.join(names or [])})"
                            if expected
                            else f"row 1 has {want}"
                        )
                        + f" (delimiter {chosen!r}); check the delimiter and quoting, or the column names"
                    )
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, gzip.BadGzipFile):
        return None
    return None


def _text(path: Path, encoding: str) -> IO[str]:
    suffix = path.suffix.lower()
    if suffix in (".gz", ".gzip"):
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open(encoding=encoding, newline="")


def _name_headerless(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    columns: list[str],
    names: list[str],
    delimiter: str | None,
    encoding: str,
) -> list[str]:
    """Give a headerless file's columns their ``names`` (the reader called them column0, column1, …)."""
    source = str(path)
    (rows,) = con.execute(f"SELECT count(*) FROM {STAGE}").fetchone() or (0,)
    if not rows:
        raise InputError(source, "the file has no rows")
    if len(columns) == 1 and len(names) != 1:
        first = con.execute(f"SELECT {ident(columns[0])} FROM {STAGE} WHERE {ROW} = 1").fetchone()
        if first and re.search(r"[,;|\t]", str(first[0] or "")):
            ragged = _ragged_headerless(path, delimiter, encoding, names)
            raise InputError(
                source,
                ragged or f"row 1 ({str(first[0])[:80]!r}) did not split into columns: pass --delimiter",
            )
    if not names:
        return columns
    if len(names) != len(columns):
        raise InputError(
            source,
            f"row 1 has {len(columns)} field(s) but --columns/source_columns names {len(names)} "
            f"({', '.join(names)}); name every column, in order, or check the delimiter",
        )
    renamed = ", ".join(f"{ident(c)} AS {ident(n)}" for c, n in zip(columns, names, strict=True))
    con.execute(f"CREATE OR REPLACE TEMP VIEW {STAGE} AS SELECT rowid + 1 AS {ROW}, {renamed} FROM {_DATA}")
    return list(names)


def _stage_past_deep_lines(con: duckdb.DuckDBPyConnection, path: Path, max_line: int) -> None:
    """Stage a JSON Lines file of which the reader refused a line nested too deep, without that line.

    The lines are taken as text (not parsed deep) and the too-deep ones picked in one columnar pass;
    the others go to a temporary file read again by the same reader, so their columns and types are
    those of a file without the deep lines. A deep line stays as a row of NULL fields, its start in
    :data:`UNREAD`, numbered where it was.
    """
    max_json = lit(max_line)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage_text AS SELECT trim(CAST(json AS VARCHAR), ' \t\r\n') AS line "
        f"FROM read_ndjson_objects({lit(str(path))}, maximum_object_size={max_json})"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage_lines AS "
        f"SELECT rowid + 1 AS __n, line, {too_deep_sql('line', LINE_DEPTH)} AS deep FROM stage_text"
    )
    con.execute("DROP TABLE stage_text")
    ((kept,),) = con.execute("SELECT count(*) FILTER (WHERE NOT deep) FROM stage_lines").fetchall()
    if not kept:
        raise InputError(str(path), f"no line can be read: {LINE_TOO_DEEP}")
    (spill,) = con.execute("SELECT current_setting('temp_directory')").fetchone() or ("",)
    with tempfile.TemporaryDirectory(prefix="shopsense-", dir=spill or None) as folder:
        shallow = Path(folder) / "shallow.jsonl"
        # valid JSON holds no raw control character, so \x01/\x02 as delimiter/quote leave each line as is
        con.execute(
            f"COPY (SELECT line FROM stage_lines WHERE NOT deep ORDER BY __n) TO {lit(str(shallow))} "
            "(FORMAT csv, HEADER false, DELIMITER '\x01', QUOTE '\x02', ESCAPE '\x02')"
        )
        reader = _reader_sql(shallow, Format.JSONL, None, "utf-8", max_line)
        con.execute(f"CREATE OR REPLACE TEMP TABLE stage_shallow AS SELECT * FROM {reader}")
    _drop(con)
    con.execute(
        f"""CREATE TEMP TABLE {_DATA} AS
        SELECT lines.__n AS {ROW}, CAST(NULL AS VARCHAR) AS {UNREAD}, shallow.* EXCLUDE (__k)
        FROM (SELECT __n, row_number() OVER (ORDER BY __n) AS __k FROM stage_lines WHERE NOT deep) AS lines
        JOIN (SELECT rowid + 1 AS __k, * FROM stage_shallow) AS shallow USING (__k)
        UNION ALL BY NAME
        SELECT __n AS {ROW}, left(line, 200) AS {UNREAD} FROM stage_lines WHERE deep
        ORDER BY {ROW}"""
    )
    con.execute(f"CREATE TEMP VIEW {STAGE} AS SELECT * FROM {_DATA}")
    con.execute("DROP TABLE stage_lines")
    con.execute("DROP TABLE stage_shallow")


def unread_lines(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the staged data holds lines the reader refused as a whole (see :data:`UNREAD`)."""
    return any(row[0] == UNREAD for row in con.execute(f"DESCRIBE {STAGE}").fetchall())


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
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {STAGE}").fetchall() if row[0] not in (ROW, UNREAD)}


__all__ = [
    "ROW",
    "STAGE",
    "UNREAD",
    "Format",
    "column_types",
    "detect_format",
    "export_format",
    "release",
    "stage_file",
    "stage_query",
    "stage_table",
    "unread_lines",
]
