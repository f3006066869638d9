"""Import one source into the store: stage, map, validate, de-duplicate, write in one transaction.

DuckDB does the work in memory (spilling to disk past the memory limit); Python only
assembles SQL and streams the validated rows into the store as Arrow batches.
Under ``on_error=fail`` a single bad row stops the import before anything is written;
under ``skip`` the good rows go in one transaction and the bad ones go to a rejects file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from shopsense.domain import FIELDS, ID_FIELD, REQUIRED, RecordKind
from shopsense.errors import InputError, Problem, ValidationFailed
from shopsense.exports import copy_to_file
from shopsense.ingest.adapters.base import Plan, Step
from shopsense.ingest.derived import derived_failure, derived_hints, derived_reads, derived_type
from shopsense.ingest.hints import hints
from shopsense.ingest.mapping import ExtraColumns, Mapping, ZeroQuantity
from shopsense.ingest.source import (
    ROW,
    STAGE,
    UNREAD,
    Format,
    column_types,
    detect_format,
    release,
    stage_file,
    stage_query,
    stage_table,
    unread_lines,
)
from shopsense.ingest.validate import LINE, FieldPlan, ident, lit, plan_fields, refuse_unread_lines
from shopsense.settings import Settings
from shopsense.store.base import EVENT_COLUMNS, Store

Progress = Callable[[str], None]
_BATCH_ROWS = 122_880


class OnError(StrEnum):
    """What an import does with invalid rows."""

    FAIL = "fail"
    SKIP = "skip"


class Duplicates(StrEnum):
    """What to do with identical event rows that carry no event_id (they may be real repeats)."""

    KEEP = "keep"
    DROP = "drop"
    ERROR = "error"


@dataclass
class ImportReport:
    """Everything an import did, for the CLI to print and tests to check."""

    kind: str
    source: str
    rows_read: int = 0
    rows_rejected: int = 0
    rows_written: int = 0
    already_stored: int = 0
    duplicates_collapsed: int = 0
    duplicates_kept: int = 0
    zero_quantity_kept: int = 0
    zero_quantity_dropped: int = 0
    new_users: int = 0
    new_items: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    problems_by_reason: dict[str, int] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    rejects_file: str | None = None
    seconds: float = 0.0

    @property
    def all_rejected(self) -> bool:
        """Every row read was rejected: under ``--on-error skip`` that is a failed import, not a success."""
        return self.rows_read > 0 and self.rows_rejected == self.rows_read

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


@contextmanager
def _plain_errors(source: str) -> Iterator[None]:
    """Turn a DuckDB error nobody foresaw into an InputError naming the source, not a traceback.

    Known failures are explained where they happen (reading, validation); this is the net
    under them, so an engine error still says which file it was about.
    """
    try:
        yield
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(source, f"the import stopped on an unexpected DuckDB error: {first}") from exc


class Importer:
    """Runs imports into one store under one set of settings."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        on_error: OnError = OnError.FAIL,
        duplicates: Duplicates = Duplicates.KEEP,
        rejects_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.on_error = on_error
        self.duplicates = duplicates
        self.rejects_dir = rejects_dir or settings.data_dir / "rejects"
        self._progress = progress or (lambda _step: None)

    def _engine(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        spill = self.settings.data_dir / "tmp"
        spill.mkdir(parents=True, exist_ok=True)
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # our own bar goes to stderr; stdout stays JSON-clean
        con.execute(f"SET memory_limit = {lit(self.settings.ingest.memory_limit)}")
        con.execute(f"SET threads = {self.settings.ingest.threads}")
        con.execute(f"SET temp_directory = {lit(str(spill))}")
        return con

    def import_file(self, path: Path, mapping: Mapping, fmt: Format | None = None) -> ImportReport:
        """Import a CSV, Parquet or JSON Lines file described by ``mapping``."""
        fmt = fmt or detect_format(path)
        con = self._engine()
        try:
            with _plain_errors(str(path)):
                self._progress("reading")
                columns = stage_file(
                    con,
                    path,
                    fmt,
                    delimiter=mapping.delimiter,
                    encoding=mapping.encoding,
                    max_line_bytes=self.settings.ingest.max_line_bytes,
                    header=mapping.header,
                    names=mapping.source_columns,
                )
                return self._run(con, str(path), columns, mapping)
        finally:
            con.close()

    def import_plan(self, plan: Plan) -> list[ImportReport]:
        """Run an adapter's plan: stage its shared tables once, then import each step in order.

        All steps commit together or not at all: a dataset whose last file is bad leaves no
        items, users or events of its earlier files behind.
        """
        con = self._engine()
        try:
            with _plain_errors(plan.label):
                self._progress("reading")
                for name, sql in plan.tables.items():
                    stage_table(con, name, sql, plan.label)
                with self.store.transaction():
                    return [self._step(con, step) for step in plan.steps]
        finally:
            con.close()

    def _step(self, con: duckdb.DuckDBPyConnection, step: Step) -> ImportReport:
        self._progress("reading")
        columns = stage_query(con, step.sql, step.label)
        excluded = {reason: _one(con, count)[0] for reason, count in step.exclusions.items()}
        report = self._run(con, step.label, columns, step.mapping)
        report.excluded = {reason: n for reason, n in excluded.items() if n}
        return report

    # -- steps ----------------------------------------------------------------------------------

    def _run(self, con: duckdb.DuckDBPyConnection, source: str, columns: list[str], mapping: Mapping) -> ImportReport:
        started = time.perf_counter()
        kind = mapping.kind
        report = ImportReport(kind=kind.value, source=source)
        resolved = mapping.resolve(columns)
        derived = derived_reads(source, columns, mapping)
        extra = self._check_columns(source, kind, columns, resolved, mapping, derived)
        if mapping.extra is ExtraColumns.IGNORE:
            report.ignored_columns = extra
        keep = extra if mapping.extra is ExtraColumns.KEEP else []
        types = column_types(con)
        raw_types = {f: types[c] for f, c in resolved.items()} | {f: "VARCHAR" for f in mapping.constants}
        raw_types |= {f: derived_type(con, source, f, e) for f, e in mapping.derived.items()}
        absent = [f for f in FIELDS[kind] if f not in raw_types]
        extra_json = "r__extra" if keep else None
        plan = plan_fields(kind, self.settings, mapping, raw_types, extra_json)
        unread = unread_lines(con)
        if unread:
            plan = refuse_unread_lines(plan)
        self._create_views(con, resolved, mapping, absent, keep, plan, unread)

        self._progress("validating")
        zero = ZeroQuantity(mapping.zero_quantity or self.settings.ingest.zero_quantity)
        try:
            self._key_rows(con, kind, zero)
        except duckdb.Error as exc:
            if mapping.derived:
                raise InputError(source, derived_failure(con, mapping, exc)) from exc
            raise
        report.rows_read, bad_rows, zeros = _one(
            con, "SELECT count(*), count(*) FILTER (WHERE NOT _ok), count(*) FILTER (WHERE _ok AND _zero) FROM keyed"
        )
        if zero is ZeroQuantity.DROP:
            report.zero_quantity_dropped = zeros
        else:
            report.zero_quantity_kept = zeros
        counts = _rule_counts(con, plan) if bad_rows else {}
        advice = hints(con, plan, counts, report.rows_read, mapping.timestamp_format) if bad_rows else []
        report.hints = [*derived_hints(mapping, counts), *advice]
        self._progress("checking duplicates")
        self._mark_duplicates(con, kind)
        conflicts = dict(
            con.execute("SELECT reason, count(*) FROM dup_marks WHERE conflict GROUP BY reason").fetchall()
        )
        counts.update(conflicts)
        bad_rows += sum(conflicts.values())
        report.problems_by_reason = counts
        report.rows_rejected = bad_rows
        if bad_rows and self.on_error is OnError.FAIL:
            shown = _problems(con, source, plan, self.settings.ingest.max_problems_shown)
            raise ValidationFailed(shown, sum(counts.values()), bad_rows, report.hints)
        report.duplicates_collapsed = _one(con, "SELECT count(*) FROM dup_marks WHERE collapse AND NOT conflict")[0]
        report.duplicates_kept = _one(con, "SELECT count(*) FROM dup_marks WHERE NOT collapse AND occ > 1")[0]
        if bad_rows:
            report.rejects_file = str(self._write_rejects(con, source, plan))

        self._progress("writing")
        self._write(con, kind, source, report)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _check_columns(
        self,
        source: str,
        kind: RecordKind,
        columns: list[str],
        resolved: dict[str, str],
        mapping: Mapping,
        derived_reads: set[str],
    ) -> list[str]:
        """Refuse mappings that point at absent columns or leave required fields unfilled."""
        found = ", ".join(columns)
        hint = ""
        if not mapping.header and not mapping.source_columns:
            hint = (
                "; the file has no header: name its columns (--columns a,b,c, source_columns = [...]) or map "
                "fields by position (--map user_id=1, [columns] user_id = 1)"
            )
        if len(columns) == 1 and any(ch in columns[0] for ch in ",;|\t"):
            hint = "; only one column was found, so the delimiter is probably wrong (pass --delimiter)"
        absent = {f: c for f, c in resolved.items() if c not in columns}
        if absent:
            listed = ", ".join(
                f"{f} -> position {c[1:]} (the file has {len(columns)} columns)"
                if c.startswith("#") and c[1:].isdigit()
                else f"{f} -> {c!r}"
                for f, c in absent.items()
            )
            raise InputError(source, f"mapped column(s) not in the file: {listed}. Columns found: {found}{hint}")
        missing = sorted(REQUIRED[kind] - set(resolved) - set(mapping.constants) - set(mapping.derived))
        if missing:
            raise InputError(
                source,
                f"missing required column(s) for {', '.join(missing)}; map them with --map FIELD=COLUMN "
                f"or a mapping file. Columns found: {found}{hint}",
            )
        used = set(resolved.values()) | derived_reads
        extra = [c for c in columns if c not in used]
        if extra and mapping.extra is ExtraColumns.ERROR:
            raise InputError(
                source,
                f"unmapped column(s): {', '.join(extra)}. Map them, or pass --extra ignore (leave them out) "
                "or --extra keep (store them as JSON context/attributes)",
            )
        return extra

    def _create_views(
        self,
        con: duckdb.DuckDBPyConnection,
        resolved: dict[str, str],
        mapping: Mapping,
        absent: list[str],
        keep: list[str],
        plan: FieldPlan,
        unread: bool,
    ) -> None:
        raw = [f"{ident(c)} AS {ident('r_' + f)}" for f, c in resolved.items()]
        raw += [f"{UNREAD} AS {ident('r_' + LINE)}"] if unread else []
        raw += [
            f"{lit(v if isinstance(v, str) else str(v))} AS {ident('r_' + f)}" for f, v in mapping.constants.items()
        ]
        raw += [f"({expr}) AS {ident('r_' + f)}" for f, expr in mapping.derived.items()]
        raw += [f"CAST(NULL AS VARCHAR) AS {ident('r_' + f)}" for f in absent]
        if keep:
            pairs = ", ".join(f"{lit(c)}, {ident(c)}" for c in keep)
            raw.append(f"json_object({pairs}) AS r__extra")
        con.execute(f"CREATE OR REPLACE TEMP VIEW src AS SELECT {ROW} AS _row, {', '.join(raw)} FROM {STAGE}")
        typed = ", ".join(f"{expr} AS {ident(name)}" for name, expr in plan.typed.items())
        con.execute(f"CREATE OR REPLACE TEMP VIEW typed AS SELECT src.*, {typed} FROM src")
        con.execute(f"CREATE OR REPLACE TEMP VIEW checked AS SELECT *, {plan.ok_condition()} AS _ok FROM typed")

    def _key_rows(self, con: duckdb.DuckDBPyConnection, kind: RecordKind, zero: ZeroQuantity) -> None:
        """Materialise every row once: typed fields, validity, content hash and idempotency key.

        Validation runs in this single pass; later steps read the compact typed table.
        Each row is keyed by its own id when it has one, else by its content, row by row: an
        events file whose ``event_id`` column is partly empty (an export of mixed events) keys
        its id-less rows exactly as a file without the column, or the HTTP path, would.
        """
        fields = _content_fields(kind)
        has_id = f"{ident(ID_FIELD[kind])} IS NOT NULL"
        # With an id, content only tells repeats of the id apart inside this file: a fast hash will do.
        # Without, content is the stored idempotency key: a hash that is stable across versions.
        fast = f"hash({', '.join(ident(f) for f in fields)})"
        content = f"CASE WHEN {has_id} THEN {fast} ELSE {content_key_sql(kind)} END"
        # _zero: a valid event of quantity 0 (counted); _drop: one the zero-quantity policy leaves out
        is_zero = "coalesce(quantity = 0, FALSE)" if kind is RecordKind.EVENTS else "FALSE"
        drop = lit(zero is ZeroQuantity.DROP)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE keyed AS
            SELECT *, CASE WHEN _has_id THEN {id_key_sql(kind)} ELSE _content END AS _key,
                   _ok AND _zero AND {drop} AS _drop
            FROM (SELECT _row, _ok, {", ".join(ident(f) for f in FIELDS[kind])}, {content} AS _content,
                         {has_id} AS _has_id, {is_zero} AS _zero
                  FROM checked)"""
        )

    def _mark_duplicates(self, con: duckdb.DuckDBPyConnection, kind: RecordKind) -> None:
        """Fill ``dup_marks``: valid rows in groups sharing a key, and why a conflicting one is rejected.

        Rows sharing an id with identical content collapse to one (a re-sent record).
        Rows sharing an id with different content are a conflict (a problem).
        Events without an event_id share a key when every field is equal; those are kept
        as separate events by default (numbered, so re-imports still collapse them).
        """
        drop = self.duplicates is Duplicates.DROP
        error = self.duplicates is Duplicates.ERROR
        clash = f"repeats the {ID_FIELD[kind]} of an earlier row with different content"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE dup_marks AS
            WITH valid AS (SELECT _row, _key, _content, _has_id FROM keyed WHERE _ok AND NOT _drop),
            groups AS (SELECT _key FROM valid GROUP BY _key HAVING count(*) > 1),
            ranked AS (
                SELECT _row, _has_id, row_number() OVER w AS occ, min(_row) OVER w AS first_row,
                       count(DISTINCT _content) OVER w AS n_content
                FROM valid SEMI JOIN groups USING (_key)
                WINDOW w AS (PARTITION BY _key ORDER BY _row ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
            ),
            marked AS (
                SELECT _row, occ, first_row, _has_id,
                       occ > 1 AND ((_has_id AND n_content > 1) OR (NOT _has_id AND {lit(error)})) AS conflict,
                       occ > 1 AND (_has_id OR {lit(drop)}) AS collapse
                FROM ranked
            )
            SELECT _row, occ, first_row, conflict, collapse,
                   CASE WHEN NOT conflict THEN NULL WHEN _has_id THEN {lit(clash)}
                        ELSE 'identical to an earlier row (--duplicates error)' END AS reason
            FROM marked"""
        )

    def _write(self, con: duckdb.DuckDBPyConnection, kind: RecordKind, source: str, report: ImportReport) -> None:
        release(con)  # free the raw text before streaming
        final = (
            "FROM keyed LEFT JOIN dup_marks USING (_row) "
            "WHERE _ok AND NOT _drop AND NOT coalesce(dup_marks.conflict OR dup_marks.collapse, FALSE)"
        )
        if kind is RecordKind.EVENTS:
            occ = "coalesce(dup_marks.occ, 1)"
            con.execute(
                f"""CREATE OR REPLACE TEMP VIEW final AS SELECT keyed.*,
                CASE WHEN {occ} = 1 THEN _key ELSE md5_number(CAST(_key AS VARCHAR) || '#' || {occ}) END AS _k
                {final}"""
            )
            users = con.sql("SELECT DISTINCT user_id FROM final").to_arrow_table().column(0)
            items = con.sql("SELECT DISTINCT item_id FROM final").to_arrow_table().column(0)
            cols = ", ".join(ident(c) for c in EVENT_COLUMNS[2:])
            stream = con.sql(
                "SELECT CAST(_k >> 64 AS UBIGINT) AS key_hi, CAST(_k & 18446744073709551615 AS UBIGINT) AS key_lo, "
                f"{cols} FROM final"
            ).to_arrow_reader(_BATCH_ROWS)
            result = self.store.append_events(stream, _combine(users), _combine(items), source)
        else:
            fields = list(FIELDS[kind])
            stream = con.sql(f"SELECT {', '.join(ident(f) for f in fields)} {final}").to_arrow_reader(_BATCH_ROWS)
            upsert = self.store.upsert_items if kind is RecordKind.ITEMS else self.store.upsert_users
            result = upsert(stream, source)
        report.rows_written = result.written
        report.already_stored = result.already_stored
        report.new_users = result.new_users
        report.new_items = result.new_items

    def _write_rejects(self, con: duckdb.DuckDBPyConnection, source: str, plan: FieldPlan) -> Path:
        self.rejects_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        out = self.rejects_dir / f"{Path(source).name}.{stamp}.rejects.csv"
        union = _problem_union(plan)
        raw_cols = [r[0] for r in con.execute("DESCRIBE src").fetchall() if r[0] != "_row"]
        shown = ", ".join(f"src.{ident(c)} AS {ident(c[2:])}" for c in raw_cols)
        # through the one CSV writer of exports: whole or not at all, formula-like cells neutralised
        copy_to_file(
            con,
            f"""SELECT p._row AS row, string_agg(p.field || ': ' || p.reason, '; ' ORDER BY p.field) AS reasons, {shown}
                FROM ({union}) p JOIN src USING (_row) GROUP BY ALL ORDER BY p._row""",
            out,
        )
        return out


def content_key_sql(kind: RecordKind) -> str:
    """SQL for a record's content key: the idempotency key of an event without an id.

    Stable across versions and shared by every write path (file import, HTTP), so the same
    event sent twice by different routes is stored once.
    """
    parts = [f"epoch_us({ident(f)})" if f == "timestamp" else ident(f) for f in _content_fields(kind)]
    return "md5_number(concat_ws('\x1f', " + ", ".join(f"coalesce(CAST({p} AS VARCHAR), '\x00')" for p in parts) + "))"


def id_key_sql(kind: RecordKind) -> str:
    """SQL for the idempotency key of a record that carries its own id (NULL when it has none)."""
    return f"md5_number('id:' || {ident(ID_FIELD[kind])})"


def _content_fields(kind: RecordKind) -> list[str]:
    """Fields whose values make two rows "the same record"; an event's own id and context do not."""
    return [f for f in FIELDS[kind] if not (kind is RecordKind.EVENTS and f in ("event_id", "context"))]


def _combine(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if column.num_chunks else pa.array([], type=pa.string())


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, ...]:
    (row,) = con.execute(sql).fetchall()
    return tuple(int(v or 0) for v in row)


def _rule_counts(con: duckdb.DuckDBPyConnection, plan: FieldPlan) -> dict[str, int]:
    """Rows failing each rule (``column: reason``), zeros left out; one pass, run only when rows failed."""
    per_rule = ", ".join(f"count(*) FILTER (WHERE {r.condition})" for r in plan.rules)
    counts = _one(con, f"SELECT {per_rule} FROM checked")
    merged: dict[str, int] = {}
    for rule, n in zip(plan.rules, counts, strict=True):
        if n:
            name = f"{rule.column}: {rule.reason}"
            merged[name] = merged.get(name, 0) + n
    return merged


def _problem_union(plan: FieldPlan) -> str:
    parts = [
        f"SELECT _row, {lit(r.column)} AS field, CAST({ident('r_' + r.column)} AS VARCHAR) AS value, "
        f"{lit(r.reason)} AS reason FROM checked WHERE {r.condition}"
        for r in plan.rules
    ]
    parts.append(
        "SELECT _row, 'row' AS field, NULL AS value, reason || ' (row ' || first_row || ')' AS reason "
        "FROM dup_marks WHERE conflict"
    )
    return " UNION ALL ".join(parts)


def _problems(con: duckdb.DuckDBPyConnection, source: str, plan: FieldPlan, cap: int) -> list[Problem]:
    rows = con.execute(
        f"SELECT _row, field, value, reason FROM ({_problem_union(plan)}) ORDER BY _row, field LIMIT {cap}"
    ).fetchall()
    return [Problem(source, int(r), c, v, reason) for r, c, v, reason in rows]
