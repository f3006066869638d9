"""The server store: a PostgreSQL database, opened by ``postgresql://user@host:port/database``.

Same contract as the embedded store (:mod:`shopsense.store.duckdb`), built for several processes
writing at once (two servers, an import while the server runs):

* Event keys are unique in the database: ``PRIMARY KEY (key_hi, key_lo)``, writes go in with
  ``ON CONFLICT DO NOTHING``. PostgreSQL has no unsigned 64-bit type, so each unsigned half is stored
  as ``bigint`` offset by 2**63 (the top bit flipped): order and equality are kept, 16 bytes a key.
* ``users.user_id``, ``items.item_id`` and ``assignments (campaign, user_id)`` are unique too; dense
  ids come from identity columns and batch ids from a sequence, so no two writers hand out the same
  one (a rolled-back write leaves a gap, never a reuse).
* Bulk writes go through ``COPY`` (CSV written by Arrow) into a temporary staging table, then one
  ``INSERT … SELECT`` per table, all in one transaction.
* Profiles keep their Arrow schema: the batch, sorted by ``user_id``, is stored as Parquet parts of
  at most :data:`PROFILE_PART_ROWS` rows (``bytea``), with a ``user_id → part`` index so that erasing
  one user rewrites only the part holding them.
* No journal: every write is committed before it returns. Each store handle borrows one connection
  from the process's pool for its database (:mod:`shopsense.store.pool`) and gives it back on close,
  so opening a handle costs a schema-version read, not a new backend (the store API is used by one
  thread per handle; the server funnels its calls through one).
* Bulk reads come back columnar: ``COPY (query) TO STDOUT`` as CSV, parsed by Arrow with the result's
  schema, never row tuples in Python.
"""

from __future__ import annotations

import functools
import inspect
import io
import itertools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from shopsense.domain import RecordKind
from shopsense.errors import StoreError, StoreUnavailable
from shopsense.exports import copy_to_file
from shopsense.ingest.source import Format, export_format
from shopsense.store import jobsql, migrations
from shopsense.store.base import (
    EVENT_COLUMNS,
    MISSING_IMPRESSIONS,
    FeedChanges,
    FeedCursor,
    FeedStart,
    NestedTransactions,
    StoreSummary,
    WriteResult,
    erasure_hash,
    shown_url,
)
from shopsense.store.pool import connection_pool, discard_pool

PROFILE_PART_ROWS = 65_536
"""Profiles per stored Parquet part: erasing a user rewrites one part of at most this many rows."""

_LOCK_ID = 0x5E0_5E05E
"""Advisory lock taken while the schema is created, so two processes opening a new database do not race."""

_SET_VERSION = "INSERT INTO meta VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
_OFFSET = np.uint64(1 << 63)
_SORT_IN_MEMORY = "SET LOCAL work_mem = '64MB'"
"""For one transaction's whole-table sort or hash: with the default 4MB, sorting a million events spills to
disk and an event scan takes twice as long (measured: 6.3 s against 3.6 s to stream 1M events)."""


_ITEM_FIELDS = ("title", "description", "category", "brand", "price", "currency", "available", "stock")
_STAGE_TYPES = {
    "key_hi": "BIGINT",
    "key_lo": "BIGINT",
    "event_id": "TEXT",
    "user_id": "TEXT",
    "item_id": "TEXT",
    "type": "TEXT",
    "timestamp": "TIMESTAMPTZ",
    "channel": "TEXT",
    "session_id": "TEXT",
    "quantity": "DOUBLE PRECISION",
    "value": "DOUBLE PRECISION",
    "rating": "DOUBLE PRECISION",
    "context": "TEXT",
    "title": "TEXT",
    "description": "TEXT",
    "category": "TEXT[]",
    "brand": "TEXT",
    "price": "DOUBLE PRECISION",
    "currency": "TEXT",
    "available": "BOOLEAN",
    "stock": "BIGINT",
    "attributes": "TEXT",
    "first_seen": "TIMESTAMPTZ",
}
"""Staging column types of the streams written here (JSON stays text until it is inserted)."""

TS = pa.timestamp("us", tz="UTC")
_CATEGORY = pa.list_(pa.field("l", pa.string()))
_EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("type", pa.string()),
        ("timestamp", TS),
        ("channel", pa.string()),
        ("session_id", pa.string()),
        ("quantity", pa.float64()),
        ("value", pa.float64()),
        ("rating", pa.float64()),
        ("context", pa.string()),
    ]
)
_EVENTS_VIEW = """SELECT e.event_id, u.user_id, i.item_id, e.type, e.ts AS timestamp, e.channel, e.session_id,
    e.quantity, e.value, e.rating, e.context::TEXT AS context
FROM events e JOIN users u USING (user_idx) JOIN items i USING (item_idx)"""
_ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("category", _CATEGORY),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("available", pa.bool_()),
        ("stock", pa.int64()),
        ("attributes", pa.string()),
    ]
)
_ITEMS_EXPORT_SCHEMA = pa.schema(
    [
        *list(_ITEMS_SCHEMA)[:6],
        ("currency", pa.string()),
        *list(_ITEMS_SCHEMA)[6:],
        ("first_seen", TS),
    ]
)
"""The items table as ``export`` writes it (the embedded store's columns, without its internal ones)."""
_USERS_EXPORT_SCHEMA = pa.schema([("user_id", pa.string()), ("attributes", pa.string()), ("first_seen", TS)])
_ACTIVITY_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("type", pa.string()),
        ("channel", pa.string()),
        ("events", pa.int64()),
        ("users", pa.int64()),
        ("quantity", pa.float64()),
        ("value", pa.float64()),
    ]
)
_CATEGORY_ACTIVITY_SCHEMA = pa.schema(
    [
        ("category", pa.string()),
        ("events", pa.int64()),
        ("users", pa.int64()),
        ("purchases", pa.int64()),
        ("revenue", pa.float64()),
    ]
)
_ITEM_ACTIVITY_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("type", pa.string()),
        ("events", pa.int64()),
        ("users", pa.int64()),
        ("quantity", pa.float64()),
        ("value", pa.float64()),
    ]
)
_IMPORT_LOG_SCHEMA = pa.schema(
    [
        ("batch_id", pa.int64()),
        ("kind", pa.string()),
        ("source", pa.string()),
        ("imported_at", pa.timestamp("us", tz="UTC")),
        ("received", pa.int64()),
        ("written", pa.int64()),
        ("already_stored", pa.int64()),
    ]
)
_REPORT_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("impressions", pa.int64()),
        ("recommendations", pa.int64()),
        ("clicks", pa.int64()),
        ("purchases", pa.int64()),
        ("revenue", pa.float64()),
    ]
)
_IMPRESSIONS_SCHEMA = pa.schema(
    [
        ("recommendation_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("position", pa.int32()),
        ("model_version", pa.string()),
        ("timestamp", TS),
    ]
)
_ASSIGNMENTS_SCHEMA = pa.schema([("user_id", pa.string()), ("variant", pa.string()), ("assigned_at", TS)])
_FEED_EVENTS_SCHEMA = _EVENTS_SCHEMA.append(pa.field("txid", pa.int64()))
_FEED_EVENTS_VIEW = """SELECT e.event_id, u.user_id, i.item_id, e.type, e.ts AS timestamp, e.channel, e.session_id,
    e.quantity, e.value, e.rating, e.context::TEXT AS context, e.txid::TEXT::BIGINT AS txid
FROM events e JOIN users u USING (user_idx) JOIN items i USING (item_idx)"""
"""``_EVENTS_VIEW`` plus the writing transaction, so a replica applies a feed window in commit order."""
_ERASURES_SCHEMA = pa.schema([("user_id", pa.string()), ("txid", pa.int64())])
_FEED_ITEMS_SCHEMA = pa.schema([("item_id", pa.string()), ("available", pa.bool_()), ("stock", pa.int64())])
_FEED_WINDOW = """({t}.txid >= %(high)s::TEXT::XID8 AND {t}.txid < %(end)s::TEXT::XID8
    OR {t}.txid = ANY(%(running)s::BIGINT[]::TEXT[]::XID8[]))
    AND NOT {t}.txid = ANY(%(still)s::BIGINT[]::TEXT[]::XID8[])"""
"""Rows of the transactions that ended between two feed snapshots (``t`` names the table)."""
_T = TypeVar("_T")


def _driver_errors_as_store_errors(cls: type[_T]) -> type[_T]:
    """Wrap every public method so a psycopg error (a lost connection, a value PostgreSQL refuses) leaves the
    store as a :class:`StoreError` naming the database, as the embedded store's errors do, never a raw driver
    exception (the CLI prints a StoreError as one line; the API answers it without a traceback)."""

    def wrapped(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except psycopg.Error as exc:
                raise driver_error(self.url, exc) from exc

        return call

    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member) and name != "transaction":
            setattr(cls, name, wrapped(member))
    return cls


@_driver_errors_as_store_errors
class PostgresStore(NestedTransactions, jobsql.SqlJobs):
    """Store backed by a PostgreSQL database (one pooled connection per handle, from open to close)."""

    def __init__(self, url: str, connect_timeout: int = 10, migrate: bool = False) -> None:
        """Connect, and bring a fresh database to the current schema.

        A database at an older schema version is refused unless ``migrate`` (``shopsense migrate``):
        other processes may be using it, so it changes only when an operator says so.
        """
        self.url = url
        self.journal_path: Path | None = None
        self.applied: list[str] = []
        """The migrations this handle applied when it opened the store (``shopsense migrate`` reports them)."""
        self.last_txid: int | None = None
        """See :class:`shopsense.store.base.ReplicaFeed`."""
        shown = shown_url(url)
        parts = urlsplit(url)
        if not parts.path.strip("/"):
            raise StoreError(
                f"store URL {shown!r}: no database named (expected postgresql://user@host:port/database, "
                "or postgresql:///database over the local socket: three slashes)"
            )
        self._lent: psycopg.Connection[Any] | None = None
        try:
            pool = connection_pool(url, connect_timeout)
            conn = pool.getconn()
        except psycopg.Error as exc:  # a pool that timed out waiting for a connection included
            raise StoreError(f"cannot open {shown}: {_first_line(exc)}") from exc
        self._pool, self._lent = pool, conn
        try:
            self._bring_schema_up(conn, migrate)
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cannot open {shown}: {_first_line(exc)}") from exc
        except StoreError as exc:
            self.close()
            discard_pool(url)  # refused before anything was created or changed; nothing stays connected to it
            raise StoreError(f"cannot open {shown}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    @property
    def _conn(self) -> psycopg.Connection[Any]:
        """The connection this handle borrowed; gone once closed, as it may be lent to another handle by then.

        A connection found lost (the database restarted, the backend was ended) is exchanged for a fresh one
        outside a transaction: the call that met the loss failed, the next works, and a long-lived handle
        (a server's writer) recovers by itself instead of failing until the process restarts.
        """
        conn = self._lent
        if conn is None:
            raise StoreError(f"{shown_url(self.url)}: the store handle is closed")
        return self._renewed(conn) if conn.broken and not self._depth else conn

    def _renewed(self, lost: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        """A fresh connection for a lost one (never inside a transaction: its earlier statements died with it)."""
        conn = self._pool.getconn()  # raises while the database is away: the handle keeps trying at each call
        self._pool.putconn(lost)  # the pool discards a broken connection
        self._lent = conn
        return conn

    def _bring_schema_up(self, conn: psycopg.Connection[Any], migrate: bool) -> None:
        """Apply the missing migrations of a fresh database (or of any, with ``migrate``) in one transaction
        under an advisory lock, so two processes opening one database never race and a failed step leaves
        the database as it was."""
        if self._stored_version(conn) == str(migrations.latest()):
            return  # the usual open: nothing to change, so no lock and no transaction (a few round trips)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])
            stored = self._stored_version(conn)
            version = 0 if stored is None else _version_number(stored)
            if version > migrations.latest():
                raise StoreError(f"schema version {stored}; this shopsense reads {migrations.latest()}")
            if 0 < version < migrations.latest() and not migrate:
                raise StoreError(
                    f"schema version {stored}; this shopsense uses {migrations.latest()}: run `shopsense migrate` "
                    "once (stop the servers first, or accept that they refuse the new schema until upgraded)"
                )
            for step in migrations.pending(version):
                conn.execute(step.sql)
                conn.execute(_SET_VERSION, [str(step.version)])
                self.applied.append(f"{step.version:04d}_{step.name}")

    @staticmethod
    def _stored_version(conn: psycopg.Connection[Any]) -> str | None:
        """The database's shopsense schema version, None for a database shopsense never wrote to.

        Read before any DDL runs, so a newer schema (or somebody else's tables) is never altered.

        Raises:
            StoreError: the database holds tables but no shopsense ``meta``: not a shopsense store.
        """
        if conn.execute("SELECT to_regclass('meta')").fetchone() == (None,):
            (tables,) = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchone() or (0,)
            if tables:
                raise StoreError(f"the database holds {tables} table(s) but no shopsense schema: not a shopsense store")
            return None
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return str(row[0]) if row else None

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _outermost(self) -> Iterator[None]:
        """See :class:`shopsense.store.base.NestedTransactions`; a lost connection is renewed before it begins."""
        conn = self._conn
        try:
            with (self._renewed(conn) if conn.broken else conn).transaction():
                yield
        except psycopg.Error as exc:  # raised by the commit itself, or by a statement the caller ran directly
            raise driver_error(self.url, exc) from exc

    def _begin_snapshot(self) -> None:
        """See :class:`shopsense.store.base.NestedTransactions`: READ COMMITTED takes a snapshot per statement."""
        self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def _rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def _count(self, sql: str, params: Any = None) -> int:
        rows = self._rows(sql, params)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def _affected(self, sql: str, params: Any = None) -> int:
        return max(self._conn.execute(sql, params).rowcount, 0)

    def _arrow(self, sql: str, schema: pa.Schema, params: Any = None) -> pa.Table:
        """A query's rows as an Arrow table of ``schema`` (its columns in order), read columnar.

        The rows come as ``COPY … TO STDOUT`` CSV, which Arrow parses in bulk: building Python tuples first
        cost about as much as the query itself on large reads. A list column must be selected as JSON text
        (``array_to_json``); it is parsed back into the list type here.
        """
        with self._conn.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
        if not data:
            return schema.empty_table()
        lists = {f.name for f in schema if pa.types.is_list(f.type)}
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=schema.names, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: pa.string() if f.name in lists else f.type for f in schema},
                null_values=[""],  # PostgreSQL writes NULL unquoted and empty, an empty string as ""
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        for name in lists:
            index = schema.get_field_index(name)
            table = table.set_column(index, schema.field(index), _json_lists(table.column(name), schema.field(index)))
        return table

    def _stage(self, name: str, rows: pa.RecordBatchReader | pa.Table) -> int:
        """COPY a stream into a new temporary table ``name`` (dropped at commit); returns the rows copied."""
        schema = rows.schema
        columns = ", ".join(f'"{f.name}" {_STAGE_TYPES.get(f.name, "TEXT")}' for f in schema)
        self._conn.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
        self._conn.execute(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")
        batches = rows.to_batches() if isinstance(rows, pa.Table) else rows
        copied = 0
        with self._conn.cursor() as cur, cur.copy(f"COPY {name} FROM STDIN (FORMAT csv)") as copy:
            for batch in batches:
                if batch.num_rows:
                    copy.write(_csv(batch))
                    copied += batch.num_rows
        return copied

    def _add_ids(self, table: str, id_col: str, ids: str) -> int:
        """Store every id of the query ``ids`` (column ``id``) not stored yet; returns how many were new."""
        return self._affected(
            f"""INSERT INTO {table} ({id_col}, updated_at)
            SELECT id, now() FROM (SELECT DISTINCT id FROM ({ids}) n WHERE id IS NOT NULL) d
            WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{id_col} = d.id)
            ORDER BY id COLLATE "C"
            ON CONFLICT ({id_col}) DO NOTHING"""
        )

    def _next_batch(self) -> int:
        return self._count("SELECT nextval('batch_ids')")

    # -- writes -------------------------------------------------------------------------------

    def log_import(self, batch_id: int, kind: str, source: str, received: int, written: int) -> None:
        """See :class:`shopsense.store.base.EventStore`."""
        self._conn.execute(
            "INSERT INTO imports VALUES (%s, %s, %s, now(), %s, %s, %s)",
            [batch_id, kind, source, received, written, received - written],
        )

    def append_events(
        self,
        events: pa.RecordBatchReader | pa.Table,
        user_ids: pa.Array,
        item_ids: pa.Array,
        source: str,
        *,
        log: bool = True,
    ) -> WriteResult:
        """See :class:`shopsense.store.base.EventStore`.

        A write of at most :data:`_ARRAY_ROWS` events goes in as array parameters (:meth:`_insert_arrays`),
        a larger one through a COPY-staged table (:meth:`_insert_staged`); either way in one transaction
        that first locks the stored users and adds the missing users and items, each in its own statement
        so that the events' lookup sees an erasure or a concurrent writer's new ids that committed meanwhile.
        """
        keyed = _whole_if_small(_offset_keys(events), _ARRAY_ROWS)
        with self.transaction():
            users = _strings(user_ids)
            items = _strings(item_ids)
            self._hold_users(users)
            new_users = self._affected(_ADD_FROM_ARRAY.format(table="users", id_col="user_id"), [users])
            new_items = self._affected(_ADD_FROM_ARRAY.format(table="items", id_col="item_id"), [items])
            if isinstance(keyed, pa.Table):
                received = keyed.num_rows
                batch, written, txid = self._insert_arrays(keyed)
            else:
                received, (batch, written, txid) = self._insert_staged(keyed)
            if log:
                self.log_import(batch, "events", source, received, written)
        self.last_txid = txid
        return WriteResult(batch, received, written, received - written, new_users, new_items, txid)

    def _insert_arrays(self, events: pa.Table) -> tuple[int, int, int]:
        """Insert a few keyed events sent as one array per column; returns (batch id, written, txid).

        One statement, no staging table: creating and dropping a temporary table writes the system catalogs
        (about 3 ms a commit), and over a table without statistics the planner hashed the whole users and
        items tables to look up a handful of ids (4 ms for one event against 50,000 users).
        """
        arrays = [_param_array(events.column(name)) for name in EVENT_COLUMNS]
        ((batch, written, txid),) = self._rows(_INSERT_ARRAYS, arrays)
        return int(batch), int(written), int(txid)

    def _insert_staged(self, keyed: pa.RecordBatchReader) -> tuple[int, tuple[int, int, int]]:
        """Insert a large keyed stream COPY-staged; returns (events received, (batch id, written, txid))."""
        received = self._stage("incoming_events", keyed)
        batch = self._next_batch()
        written = self._affected(_INSERT_STAGED, [batch])
        self._conn.execute("DROP TABLE incoming_events")
        return received, (batch, written, self._current_txid())

    def upsert_items(self, items: pa.RecordBatchReader, source: str) -> WriteResult:
        """See :class:`shopsense.store.base.CatalogStore`."""
        return self._upsert(items, source, "items", "item_id", _ITEM_FIELDS)

    def upsert_users(self, users: pa.RecordBatchReader, source: str) -> WriteResult:
        """See :class:`shopsense.store.base.UserStore`."""
        return self._upsert(users, source, "users", "user_id", ())

    def _upsert(
        self, rows: pa.RecordBatchReader, source: str, table: str, id_col: str, fields: tuple[str, ...]
    ) -> WriteResult:
        given = set(rows.schema.names)
        sets = [f"{f} = coalesce(n.{f}, {table}.{f})" for f in fields if f in given]
        if "attributes" in given:
            sets.append(
                f"""attributes = CASE WHEN n.attributes IS NULL THEN {table}.attributes
                    ELSE shopsense_merge_patch(coalesce({table}.attributes, '{{}}'::JSONB), n.attributes::JSONB) END"""
            )
        if "first_seen" in given:
            sets.append(f"first_seen = least({table}.first_seen, n.first_seen)")
        sets.append("updated_at = now()")
        if table == "items":  # the replicas' feed reads changed items (availability) by their transaction
            sets.append("txid = pg_current_xact_id()")
        with self.transaction():
            received = self._stage("incoming", rows)
            batch = self._next_batch()
            new = self._add_ids(table, id_col, f"SELECT {id_col} AS id FROM incoming")
            # Rows locked in one order, so two writers updating the same ids wait for each other, never deadlock.
            # (An event write locks the users it names before adding new ones: against it a deadlock is possible,
            # detected by PostgreSQL and answered 503, so the client sends it again.)
            self._conn.execute(
                f"""SELECT 1 FROM {table} WHERE {id_col} IN (SELECT {id_col} FROM incoming)
                ORDER BY {id_col} COLLATE "C" FOR UPDATE"""
            )
            self._conn.execute(
                f"UPDATE {table} SET {', '.join(sets)} FROM incoming n WHERE {table}.{id_col} = n.{id_col}"
            )
            self._conn.execute("DROP TABLE incoming")
            self.log_import(batch, table, source, received, received)
        return WriteResult(
            batch,
            received,
            received,
            0,
            new_users=new if table == "users" else 0,
            new_items=new if table == "items" else 0,
        )

    # -- reads --------------------------------------------------------------------------------

    def scan_events(
        self, start: str | None = None, end: str | None = None, user_ids: list[str] | None = None
    ) -> pa.Table:
        """See :class:`shopsense.store.base.EventStore`."""
        where: list[str] = []
        params: list[Any] = []
        if user_ids is not None:
            where.append("u.user_id = ANY(%s::TEXT[])")
            params.append(list(user_ids))
        if start:
            where.append("e.ts >= %s::TIMESTAMPTZ")
            params.append(start)
        if end:
            where.append("e.ts < %s::TIMESTAMPTZ")
            params.append(end)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        with self.transaction():
            self._conn.execute(_SORT_IN_MEMORY)
            return self._arrow(f"{_EVENTS_VIEW} {clause} ORDER BY e.ts, e.key_hi", _EVENTS_SCHEMA, params)

    def scan_items(self) -> pa.Table:
        """See :class:`shopsense.store.base.CatalogStore`."""
        return self._arrow(
            "SELECT item_id, title, description, array_to_json(category), brand, price, available, stock,"
            " attributes::TEXT AS attributes FROM items ORDER BY item_idx",
            _ITEMS_SCHEMA,
        )

    def summary(self, top: int = 10) -> StoreSummary:
        """See :class:`shopsense.store.base.Store`."""
        ((users, guests),) = self._rows(
            "SELECT count(*), count(*) FILTER (WHERE (attributes->>'guest')::BOOLEAN) FROM users"
        )
        items = self._count("SELECT count(*) FROM items")
        fmt = '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\''
        ((events, first, last, net_qty, net_rev),) = self._rows(
            f"""SELECT count(*), to_char(min(ts) AT TIME ZONE 'UTC', {fmt}), to_char(max(ts) AT TIME ZONE 'UTC', {fmt}),
                coalesce(sum(CASE type WHEN 'purchase' THEN quantity WHEN 'return' THEN -quantity END), 0),
                coalesce(sum(CASE type WHEN 'purchase' THEN value WHEN 'return' THEN -value END), 0)
            FROM events"""
        )
        by_type = dict(self._rows("SELECT type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1"))
        by_channel = dict(
            self._rows("SELECT coalesce(channel, '(none)'), count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1")
        )
        funnel = [
            {"step": step, "events": int(n_events), "users": int(n_users)}
            for step, n_events, n_users in self._rows(
                """SELECT t.step, count(e.type), count(DISTINCT e.user_idx)
                FROM (VALUES (1, 'view'), (2, 'cart'), (3, 'purchase')) t(ord, step)
                LEFT JOIN events e ON e.type = t.step GROUP BY t.ord, t.step ORDER BY t.ord"""
            )
        ]
        categories = [
            {"category": c, "events": int(n), "purchases": int(p)}
            for c, n, p in self._rows(
                """SELECT i.category[1], count(*), count(*) FILTER (WHERE e.type = 'purchase')
                FROM events e JOIN items i USING (item_idx) WHERE cardinality(i.category) > 0
                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %s""",
                [top],
            )
        ]
        imports = [
            dict(
                zip(
                    ("batch_id", "kind", "source", "imported_at", "received", "written", "already_stored"),
                    r,
                    strict=True,
                )
            )
            for r in self._rows(
                f"SELECT batch_id, kind, source, to_char(imported_at AT TIME ZONE 'UTC', {fmt}), received, written, "
                "already_stored FROM imports ORDER BY batch_id"
            )
        ]
        return StoreSummary(
            users=int(users),
            guest_users=int(guests),
            items=items,
            events=int(events),
            events_by_type={k: int(v) for k, v in by_type.items()},
            events_by_channel={k: int(v) for k, v in by_channel.items()},
            first_event=first,
            last_event=last,
            funnel=funnel,
            net_quantity=float(net_qty),
            net_revenue=round(float(net_rev), 2),
            top_categories=categories,
            imports=imports,
        )

    def activity(self, start: str | None = None, end: str | None = None) -> pa.Table:
        """See :class:`shopsense.store.base.InsightStore`."""
        where, params = _time_range(start, end)
        return self._arrow(
            f"""WITH e AS (
                SELECT (ts AT TIME ZONE 'UTC')::DATE AS day, type, coalesce(channel, '(none)') AS channel,
                       user_idx, quantity, value FROM events {where})
            SELECT day, type, channel, count(*) AS events, count(DISTINCT user_idx) AS users,
                   coalesce(sum(quantity), 0)::DOUBLE PRECISION AS quantity,
                   coalesce(sum(value), 0)::DOUBLE PRECISION AS value
            FROM e GROUP BY GROUPING SETS ((day, type, channel), (day))
            ORDER BY day, type COLLATE "C" NULLS FIRST, channel COLLATE "C" NULLS FIRST""",
            _ACTIVITY_SCHEMA,
            params,
        )

    def category_activity(self, start: str | None = None, end: str | None = None, top: int = 10) -> pa.Table:
        """See :class:`shopsense.store.base.InsightStore`."""
        where, params = _time_range(start, end, "e.ts")
        return self._arrow(
            f"""SELECT i.category[1] AS category, count(*) AS events, count(DISTINCT e.user_idx) AS users,
                   count(*) FILTER (WHERE e.type = 'purchase') AS purchases,
                   coalesce(sum(CASE e.type WHEN 'purchase' THEN e.value WHEN 'return' THEN -e.value END), 0)
                       ::DOUBLE PRECISION AS revenue
            FROM events e JOIN items i USING (item_idx)
            {where + " AND" if where else "WHERE"} cardinality(i.category) > 0
            GROUP BY 1 ORDER BY events DESC, i.category[1] COLLATE "C" LIMIT {int(top)}""",
            _CATEGORY_ACTIVITY_SCHEMA,
            params,
        )

    def item_activity(self, item_ids: list[str]) -> pa.Table:
        """See :class:`shopsense.store.base.InsightStore`."""
        return self._arrow(
            """SELECT i.item_id, e.type, count(*) AS events, count(DISTINCT e.user_idx) AS users,
                   coalesce(sum(e.quantity), 0)::DOUBLE PRECISION AS quantity,
                   coalesce(sum(e.value), 0)::DOUBLE PRECISION AS value
            FROM events e JOIN items i USING (item_idx) WHERE i.item_id = ANY(%s::TEXT[])
            GROUP BY 1, 2 ORDER BY i.item_id COLLATE "C", e.type COLLATE "C"
            """,
            _ITEM_ACTIVITY_SCHEMA,
            [list(item_ids)],
        )

    def import_log(self, limit: int = 100) -> pa.Table:
        """See :class:`shopsense.store.base.InsightStore`."""
        return self._arrow(
            f"""SELECT batch_id, kind, source, imported_at, received, written, already_stored
            FROM imports ORDER BY batch_id DESC LIMIT {int(limit)}""",
            _IMPORT_LOG_SCHEMA,
        )

    def export(self, kind: RecordKind, path: Path) -> int:
        """See :class:`shopsense.store.base.Store`; the rows are written by :func:`shopsense.exports.copy_to_file`
        from an in-memory DuckDB over the Arrow result, so the files are those the embedded store writes."""
        if kind is RecordKind.EVENTS:
            table = self.scan_events()
            query = "SELECT * REPLACE (context::JSON AS context) FROM rows"
        elif kind is RecordKind.ITEMS:
            table = self._arrow(
                "SELECT item_id, title, description, array_to_json(category), brand, price, currency, available, stock,"
                " attributes::TEXT, first_seen FROM items ORDER BY item_idx",
                _ITEMS_EXPORT_SCHEMA,
            )
            # CSV has no lists: a category path is written the way an import splits it again.
            category = "array_to_string(category, ' > ')" if export_format(path)[0] is Format.CSV else "category"
            query = f"SELECT * REPLACE ({category} AS category, attributes::JSON AS attributes) FROM rows"
        else:
            table = self._arrow(
                "SELECT user_id, attributes::TEXT, first_seen FROM users ORDER BY user_idx", _USERS_EXPORT_SCHEMA
            )
            query = "SELECT * REPLACE (attributes::JSON AS attributes) FROM rows"
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("rows", table)
            return copy_to_file(con, query, path)
        finally:
            con.close()

    # -- serving: impressions, erasure --------------------------------------------------------

    def append_impressions(self, rows: pa.Table) -> list[str]:
        """See :class:`shopsense.store.base.ServingStore`."""
        with self.transaction():
            self._stage_impressions(rows)
            unknown = self._rows(
                """SELECT DISTINCT n.item_id FROM incoming_impressions n
                WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = n.item_id) ORDER BY 1"""
            )
            self._hold_users(
                [
                    r[0]
                    for r in self._rows("SELECT DISTINCT user_id FROM incoming_impressions WHERE user_id IS NOT NULL")
                ]
            )
            self._add_ids("users", "user_id", "SELECT user_id AS id FROM incoming_impressions")
            self._conn.execute(
                """INSERT INTO impressions
                SELECT n.recommendation_id, u.user_idx, i.item_idx, n.position, n.model_version, n.ts
                FROM incoming_impressions n
                JOIN users u ON u.user_id = n.user_id JOIN items i ON i.item_id = n.item_id"""
            )
            self._conn.execute("DROP TABLE incoming_impressions")
            return [row[0] for row in unknown]

    def _stage_impressions(self, rows: pa.Table) -> None:
        self._conn.execute("DROP TABLE IF EXISTS pg_temp.incoming_impressions")
        self._conn.execute(
            """CREATE TEMP TABLE incoming_impressions ON COMMIT DROP AS
            SELECT * FROM unnest(%s::TEXT[], %s::TEXT[], %s::TEXT[], %s::INTEGER[], %s::TEXT[], %s::TIMESTAMPTZ[])
                AS n(recommendation_id, user_id, item_id, position, model_version, ts)""",
            [
                rows.column(c).to_pylist()
                for c in ("recommendation_id", "user_id", "item_id", "position", "model_version", "timestamp")
            ],
        )

    def impression_report(self, hours: float, click_types: list[str], purchase_types: list[str]) -> pa.Table:
        """See :class:`shopsense.store.base.ServingStore`."""
        return self._arrow(
            """WITH hits AS (
                SELECT m.recommendation_id, m.item_idx, m.model_version,
                       bool_or(e.type = ANY(%(clicks)s::TEXT[])) AS clicked,
                       bool_or(e.type = ANY(%(buys)s::TEXT[])) AS bought,
                       coalesce(sum(e.value) FILTER (WHERE e.type = ANY(%(buys)s::TEXT[])), 0) AS revenue
                FROM impressions m LEFT JOIN events e
                  ON e.user_idx = m.user_idx AND e.item_idx = m.item_idx
                 AND e.ts >= m.ts AND e.ts < m.ts + make_interval(secs => %(hours)s::DOUBLE PRECISION * 3600)
                GROUP BY m.recommendation_id, m.item_idx, m.model_version)
            SELECT coalesce(model_version, 'unknown') AS model_version, count(*) AS impressions,
                   count(DISTINCT recommendation_id) AS recommendations,
                   count(*) FILTER (WHERE clicked) AS clicks, count(*) FILTER (WHERE bought) AS purchases,
                   sum(revenue)::DOUBLE PRECISION AS revenue
            FROM hits GROUP BY 1 ORDER BY coalesce(model_version, 'unknown') COLLATE "C"
            """,
            _REPORT_SCHEMA,
            {"clicks": list(click_types), "buys": list(purchase_types), "hours": float(hours)},
        )

    def memory_held(self) -> int:
        """See :class:`shopsense.store.base.ServingStore`: nothing; the buffers are the database server's."""
        return 0

    def scan_impressions(self) -> pa.Table:
        """See :class:`shopsense.store.base.ServingStore`."""
        return self._arrow(
            """SELECT m.recommendation_id, u.user_id, i.item_id, m.position, m.model_version, m.ts
            FROM impressions m JOIN users u USING (user_idx) JOIN items i USING (item_idx)
            ORDER BY m.ts, m.recommendation_id, m.position, u.user_id COLLATE "C", i.item_id COLLATE "C"
            """,
            _IMPRESSIONS_SCHEMA,
        )

    def merge_impressions(self, rows: pa.Table) -> int:
        """See :class:`shopsense.store.base.ServingStore`."""
        with self.transaction():
            self._stage_impressions(rows)
            added = self._affected(f"INSERT INTO impressions {MISSING_IMPRESSIONS.format(ts='ts')}")
            self._conn.execute("DROP TABLE incoming_impressions")
            return added

    def _hold_users(self, user_ids: list[str]) -> None:
        """Lock the stored rows of these users against deletion until this transaction ends.

        An erasure of one of them that is running now finishes first; the ids are then looked up
        (and created anew if erased) after it, so no event or impression is written under a user
        an erasure has just removed. Locks are taken in id order, as the upserts take theirs.
        """
        self._conn.execute(
            'SELECT 1 FROM users WHERE user_id = ANY(%s::TEXT[]) ORDER BY user_id COLLATE "C" FOR KEY SHARE',
            [user_ids],
        )

    def erase_user(self, user_id: str) -> dict[str, int]:
        """See :class:`shopsense.store.base.ServingStore`."""
        with self.transaction():
            self._conn.execute("LOCK TABLE profile_parts IN ROW EXCLUSIVE MODE")  # after a concurrent save, not amid it
            found = self._rows("SELECT user_idx FROM users WHERE user_id = %s FOR UPDATE", [user_id])
            counts = {"events": 0, "impressions": 0, "users": 0}
            if found:  # assignments may name ids the store has no record of: those are erased below too
                for table in counts:
                    counts[table] = self._affected(f"DELETE FROM {table} WHERE user_idx = %s", [found[0][0]])
            counts["assignments"] = self._affected("DELETE FROM assignments WHERE user_id = %s", [user_id])
            if self._count("SELECT count(*) FROM profile_parts"):
                counts["profiles"] = self._erase_profile(user_id)
            counts["job_rows"] = self._erase_job_rows(user_id)
            # The tombstone tells the other replicas to drop the user from memory (see changes_since), and
            # every bundle trained before now not to answer for the user (tombstones).
            self._conn.execute(
                "INSERT INTO erasures (user_id, user_sha256) VALUES (%s, %s)", [user_id, erasure_hash(user_id)]
            )
            txid = self._current_txid()
        self.last_txid = txid
        return counts

    def _erase_profile(self, user_id: str) -> int:
        """Rewrite the Parquet part(s) holding the user's profile without it (``erase_user`` holds the lock)."""
        parts = self._rows("DELETE FROM profile_users WHERE user_id = %s RETURNING part", [user_id])
        erased = 0
        for (part,) in sorted(set(parts)):
            rows = self._rows("SELECT data FROM profile_parts WHERE part = %s FOR UPDATE", [part])
            if not rows:
                continue
            table = pq.read_table(io.BytesIO(rows[0][0]))
            keep = table.filter(pc.invert(pc.fill_null(pc.equal(table.column("user_id"), user_id), False)))
            self._conn.execute("UPDATE profile_parts SET data = %s WHERE part = %s", [_parquet(keep), part])
            erased += table.num_rows - keep.num_rows
        return int(erased)

    def tombstones(self) -> dict[str, datetime]:
        """See :class:`shopsense.store.base.ServingStore`."""
        rows = self._rows("SELECT user_sha256, max(erased_at) FROM erasures GROUP BY 1")
        return {user: at.astimezone(UTC) for user, at in rows}

    def add_tombstones(self, tombstones: Mapping[str, datetime]) -> int:
        """See :class:`shopsense.store.base.ServingStore`. Stored without an id (``user_id`` NULL): no
        replica holds the user in memory, so the feed has nothing to tell them."""
        with self.transaction():
            return self._affected(
                """INSERT INTO erasures (user_sha256, erased_at)
                SELECT n.h, n.at FROM unnest(%s::TEXT[], %s::TIMESTAMPTZ[]) AS n(h, at)
                WHERE NOT EXISTS (SELECT 1 FROM erasures e WHERE e.user_sha256 = n.h AND e.erased_at >= n.at)""",
                [list(tombstones), list(tombstones.values())],
            )

    def user_record(self, user_id: str) -> dict[str, Any] | None:
        """See :class:`shopsense.store.base.ServingStore`."""
        rows = self._rows("SELECT attributes::TEXT, first_seen, updated_at FROM users WHERE user_id = %s", [user_id])
        if not rows:
            return None
        attributes, first_seen, updated_at = rows[0]
        return {"user_id": user_id, "attributes": attributes, "first_seen": first_seen, "updated_at": updated_at}

    # -- marketing: profiles, campaigns, assignments ------------------------------------------

    def save_profiles(self, profiles: pa.Table) -> int:
        """See :class:`shopsense.store.base.MarketingStore`."""
        ordered = profiles.sort_by("user_id") if "user_id" in profiles.column_names else profiles
        with self.transaction():
            self._conn.execute("LOCK TABLE profile_parts IN EXCLUSIVE MODE")
            self._conn.execute("DELETE FROM profile_users")
            self._conn.execute("DELETE FROM profile_parts")
            starts = range(0, max(ordered.num_rows, 1), PROFILE_PART_ROWS)  # an empty batch keeps its schema
            for part, start in enumerate(starts):
                chunk = ordered.slice(start, PROFILE_PART_ROWS)
                self._conn.execute("INSERT INTO profile_parts VALUES (%s, %s)", [part, _parquet(chunk)])
                if "user_id" in chunk.column_names and chunk.num_rows:
                    with self._conn.cursor() as cur, cur.copy("COPY profile_users FROM STDIN") as copy:
                        for user in set(chunk.column("user_id").to_pylist()) - {None}:
                            copy.write_row((user, part))
        return int(profiles.num_rows)

    def load_profiles(self) -> pa.Table | None:
        """See :class:`shopsense.store.base.MarketingStore`."""
        parts = self._rows("SELECT data FROM profile_parts ORDER BY part")
        if not parts:
            return None
        return pa.concat_tables([pq.read_table(io.BytesIO(data)) for (data,) in parts])

    def guest_user_ids(self) -> list[str]:
        """See :class:`shopsense.store.base.MarketingStore`."""
        rows = self._rows(
            "SELECT user_id FROM users WHERE coalesce((attributes->>'guest')::BOOLEAN, FALSE) ORDER BY user_idx"
        )
        return [row[0] for row in rows]

    def save_campaign(self, name: str, config_json: str) -> None:
        """See :class:`shopsense.store.base.MarketingStore`."""
        with self.transaction():
            self._conn.execute(
                """INSERT INTO campaigns VALUES (%s, %s::JSONB, clock_timestamp())
                ON CONFLICT (name) DO UPDATE SET config = excluded.config, created_at = excluded.created_at""",
                [name, config_json],
            )

    def campaigns(self) -> dict[str, str]:
        """See :class:`shopsense.store.base.MarketingStore`."""
        rows = self._rows("SELECT name, config::TEXT FROM campaigns ORDER BY created_at, name")
        return {name: config for name, config in rows}

    def save_segment(self, name: str, expression: str | None) -> None:
        """See :class:`shopsense.store.base.MarketingStore`."""
        with self.transaction():
            if expression is None:
                self._conn.execute("DELETE FROM segments WHERE name = %s", [name])
                return
            self._conn.execute(
                """INSERT INTO segments VALUES (%s, %s, clock_timestamp())
                ON CONFLICT (name) DO UPDATE SET expression = excluded.expression, created_at = excluded.created_at""",
                [name, expression],
            )

    def saved_segments(self) -> dict[str, str]:
        """See :class:`shopsense.store.base.MarketingStore`."""
        rows = self._rows("SELECT name, expression FROM segments ORDER BY created_at, name")
        return {name: expression for name, expression in rows}

    def add_assignments(self, campaign: str, rows: pa.Table) -> int:
        """See :class:`shopsense.store.base.MarketingStore`."""
        with self.transaction():
            return self._affected(
                """INSERT INTO assignments
                SELECT %s, n.user_id, n.variant, n.assigned_at
                FROM unnest(%s::TEXT[], %s::TEXT[], %s::TIMESTAMPTZ[]) AS n(user_id, variant, assigned_at)
                ON CONFLICT (campaign, user_id) DO NOTHING""",
                [campaign, *(rows.column(c).to_pylist() for c in ("user_id", "variant", "assigned_at"))],
            )

    def assignments(self, campaign: str) -> pa.Table:
        """See :class:`shopsense.store.base.MarketingStore`."""
        return self._arrow(
            'SELECT user_id, variant, assigned_at FROM assignments WHERE campaign = %s ORDER BY user_id COLLATE "C"',
            _ASSIGNMENTS_SCHEMA,
            [campaign],
        )

    # -- replica feed -------------------------------------------------------------------------

    def _current_txid(self) -> int:
        """The running transaction's id, as the ``txid`` columns record it (called inside a write)."""
        return self._count("SELECT pg_current_xact_id()::TEXT::BIGINT")

    def _feed_snapshot(self) -> FeedCursor:
        """Open one read-only REPEATABLE READ snapshot (inside ``transaction()``) and say which transactions
        it sees as ended: all below its xmax except those in its in-progress list (``pg_snapshot_xip``).

        What the snapshot shows of an ended transaction is final; a running one is read again next time,
        without holding back the transactions that ended after it began (a long import does not stall
        the replicas' feed).
        """
        self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        ((high, running),) = self._rows(
            """SELECT pg_snapshot_xmax(s)::TEXT::BIGINT, ARRAY(SELECT x::TEXT::BIGINT FROM pg_snapshot_xip(s) x)
            FROM pg_current_snapshot() s"""
        )
        return FeedCursor(int(high), frozenset(int(x) for x in running))

    def feed_start(self) -> FeedStart:
        """See :class:`shopsense.store.base.ReplicaFeed`."""
        with self.transaction():
            cursor = self._feed_snapshot()
            events = self._arrow(f"{_EVENTS_VIEW} ORDER BY e.ts, e.key_hi", _EVENTS_SCHEMA)
        return FeedStart(events, cursor)

    def changes_since(self, cursor: FeedCursor) -> FeedChanges:
        """See :class:`shopsense.store.base.ReplicaFeed`: the transactions the last snapshot did not see ended
        (from its xmax on, and those it saw running) that this one sees ended."""
        with self.transaction():
            now = self._feed_snapshot()
            window = {
                "high": cursor.high,
                "running": sorted(cursor.running),
                "end": now.high,
                "still": sorted(now.running),
            }
            events = self._arrow(
                f"{_FEED_EVENTS_VIEW} WHERE {_FEED_WINDOW.format(t='e')} ORDER BY e.txid, e.ts, e.key_hi",
                _FEED_EVENTS_SCHEMA,
                window,
            )
            erasures = self._arrow(
                f"""SELECT user_id, txid::TEXT::BIGINT FROM erasures t
                WHERE {_FEED_WINDOW.format(t="t")} AND user_id IS NOT NULL ORDER BY txid""",
                _ERASURES_SCHEMA,
                window,
            )
            items = self._arrow(
                f"SELECT item_id, available, stock FROM items t WHERE {_FEED_WINDOW.format(t='t')}",
                _FEED_ITEMS_SCHEMA,
                window,
            )
            histories = self._arrow(
                f"""{_EVENTS_VIEW} WHERE u.user_id IN
                (SELECT user_id FROM erasures t WHERE {_FEED_WINDOW.format(t="t")}) ORDER BY e.ts, e.key_hi""",
                _EVENTS_SCHEMA,
                window,
            )
        return FeedChanges(events, erasures, items, histories, now)

    def close(self) -> None:
        """See :class:`shopsense.store.base.Store`: the connection goes back to the pool (closing twice is harmless).

        A connection left inside a transaction (a failed one included) is rolled back by the pool before it is
        lent again, and a broken one is discarded, so the next handle never inherits either.
        """
        conn, self._lent = self._lent, None
        if conn is not None:
            self._pool.putconn(conn)

    # -- jobs ---------------------------------------------------------------------------------

    def handle(self) -> PostgresStore:
        """See :class:`shopsense.store.base.Store`: another handle by URL (the schema is up to date already)."""
        return PostgresStore(self.url)

    def _job_query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """See :class:`shopsense.store.jobsql.SqlJobs`; driver errors leave as the store's (the methods calling
        this are inherited, so the class decorator does not wrap them)."""
        try:
            return self._rows(_pg(sql), params)
        except psycopg.Error as exc:
            raise driver_error(self.url, exc) from exc

    def _job_change(self, sql: str, params: list[Any]) -> int:
        """See :class:`shopsense.store.jobsql.SqlJobs`."""
        try:
            return self._affected(_pg(sql), params)
        except psycopg.Error as exc:
            raise driver_error(self.url, exc) from exc


_ADD_FROM_ARRAY = """INSERT INTO {table} ({id_col}, updated_at)
    SELECT id, now() FROM unnest(%s::TEXT[]) AS d(id)
    WHERE id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{id_col} = d.id)
    GROUP BY id ORDER BY id COLLATE "C"
    ON CONFLICT ({id_col}) DO NOTHING"""
"""Store the ids of an array parameter not stored yet, the new ones numbered in id order."""


def _pg(sql: str) -> str:
    """A statement of :mod:`shopsense.store.jobsql` with psycopg's placeholders."""
    return sql.replace("?", "%s")


_ARRAY_ROWS = 5_000
"""Events a write sends as array parameters at most; a larger one is COPY-staged, as array parameters are
built in Python (about 10 ms per 5,000 events) and a million would hold the import in memory at once."""
_INSERT_EVENTS = """INSERT INTO events
    SELECT e.key_hi, e.key_lo, e.event_id, {user_idx}, {item_idx}, e.type, {ts},
           e.channel, e.session_id, e.quantity, e.value, e.rating, e.context::JSONB, {batch}
    FROM {rows}
    ORDER BY e.key_hi, e.key_lo
    ON CONFLICT (key_hi, key_lo) DO NOTHING"""
"""Keyed events into ``events``, in key order (so two writers lock common keys in one order, never deadlock);
an id with no row leaves a NULL index, which the NOT NULL columns refuse rather than drop the event."""
_INSERT_ARRAYS = """WITH b AS (SELECT nextval('batch_ids') AS id), w AS ({insert} RETURNING 1)
SELECT (SELECT id FROM b), (SELECT count(*) FROM w), pg_current_xact_id()::TEXT::BIGINT""".format(
    insert=_INSERT_EVENTS.format(
        rows="""unnest(%b::BIGINT[], %b::BIGINT[], %b::TEXT[], %b::TEXT[], %b::TEXT[], %b::TEXT[], %b::BIGINT[],
            %b::TEXT[], %b::TEXT[], %b::DOUBLE PRECISION[], %b::DOUBLE PRECISION[], %b::DOUBLE PRECISION[], %b::TEXT[])
        AS e(key_hi, key_lo, event_id, user_id, item_id, type, us, channel, session_id, quantity, value, rating,
             context)""",
        ts="TIMESTAMPTZ 'epoch' + e.us * INTERVAL '1 microsecond'",
        batch="(SELECT id FROM b)",
        user_idx="(SELECT u.user_idx FROM users u WHERE u.user_id = e.user_id)",
        item_idx="(SELECT i.item_idx FROM items i WHERE i.item_id = e.item_id)",
    )
)
"""Events given as one array per column of :data:`EVENT_COLUMNS` (times in microseconds since the epoch): the batch
id, the insert and the transaction id in one statement, returning (batch id, events written, txid). Each event's
user and item are looked up by index: joined, the planner hashed both whole tables for every write (5 ms of a
1,000-event write against 30,000 users). The arrays go binary (``%b``): psycopg dumps them five times faster
than as text (1.7 against 8.8 ms for 1,000 events)."""
_INSERT_STAGED = _INSERT_EVENTS.format(
    rows="""incoming_events e
    LEFT JOIN users u ON u.user_id = e.user_id
    LEFT JOIN items i ON i.item_id = e.item_id""",
    ts='e."timestamp"',
    batch="%s",
    user_idx="u.user_idx",
    item_idx="i.item_idx",
)
"""A large write's staged events, hash-joined with the users and items (one pass over each table)."""


def _strings(ids: pa.Array | pa.ChunkedArray) -> list[str]:
    return [i for i in ids.to_pylist() if i is not None]


def _whole_if_small(stream: pa.RecordBatchReader, limit: int) -> pa.Table | pa.RecordBatchReader:
    """The stream as a table when it ends within ``limit`` rows, else a reader of all of it again (the batches
    read ahead first): a small write can go as array parameters, a large import is still streamed, never held."""
    batches = iter(stream)
    head: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        head.append(batch)
        rows += batch.num_rows
        if rows > limit:
            return pa.RecordBatchReader.from_batches(stream.schema, itertools.chain(head, batches))
    return pa.Table.from_batches(head, stream.schema)


def _param_array(column: pa.ChunkedArray) -> list[Any]:
    """A column as an array parameter; a timestamp as integer microseconds since the epoch, as psycopg adapts a
    datetime many times slower than an int (and Arrow converts to ints in bulk)."""
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us", column.type.tz), safe=False).cast(pa.int64())
    values: list[Any] = column.to_pylist()
    return values


def _offset_keys(events: pa.RecordBatchReader | pa.Table) -> pa.RecordBatchReader:
    """The stream with each unsigned key half as a signed 64-bit value offset by 2**63 (top bit flipped)."""
    fields = [
        pa.field(f.name, pa.int64()) if f.name in ("key_hi", "key_lo") else pa.field(f.name, _plain_type(f.type))
        for f in events.schema
        if f.name in EVENT_COLUMNS
    ]
    schema = pa.schema(fields)
    source = events.to_batches() if isinstance(events, pa.Table) else events

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in source:
            columns = []
            for field in schema:
                column = batch.column(field.name)
                if field.name in ("key_hi", "key_lo"):
                    if column.null_count:  # the importer keys every event; a null would become a made-up key
                        raise StoreError(f"{column.null_count} event(s) without a {field.name}: nothing written")
                    unsigned = np.asarray(column.to_numpy(zero_copy_only=False), np.uint64)
                    column = pa.array((unsigned ^ _OFFSET).view(np.int64))
                elif isinstance(column.type, pa.ExtensionType):
                    column = column.storage
                columns.append(column)
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _plain_type(kind: pa.DataType) -> pa.DataType:
    return kind.storage_type if isinstance(kind, pa.ExtensionType) else kind


def _csv(batch: pa.RecordBatch) -> bytes:
    """One batch as PostgreSQL CSV: NULL unquoted and empty, strings quoted, lists as array literals."""
    columns = []
    for column in batch.columns:
        if isinstance(column.type, pa.ExtensionType):
            column = column.storage
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pa.array([_array_literal(v) for v in column.to_pylist()], pa.string())
        elif pa.types.is_timestamp(column.type) and column.type.tz is not None:
            # Written as UTC wall time, which the session (in UTC) reads back as the same instant: Arrow formats
            # a zoned timestamp about 20 times slower (1.5 s a million, most of an import's encoding time).
            column = column.cast(pa.timestamp(column.type.unit))  # Arrow keeps the UTC value, dropping the zone
        columns.append(column)
    sink = io.BytesIO()
    table = pa.Table.from_arrays(columns, names=[f"c{i}" for i in range(len(columns))])
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue()


def _json_lists(texts: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    """A column of JSON array texts (``array_to_json``) as ``field``'s list type, parsed by Arrow's JSON reader."""
    if not len(texts):
        return pa.chunked_array([], field.type)
    lines = pc.binary_join_element_wise('{"v":', pc.fill_null(texts, "null"), "}", "").combine_chunks()
    one_list = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines)
    body = pc.binary_join(one_list, "\n")[0].as_buffer()
    schema = pa.schema([pa.field("v", field.type)])
    return pajson.read_json(pa.BufferReader(body), parse_options=pajson.ParseOptions(explicit_schema=schema))["v"]


def _array_literal(values: list[Any] | None) -> str | None:
    if values is None:
        return None
    quoted = ("NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def driver_error(url: str, exc: psycopg.Error) -> StoreError:
    """A driver error as the store's: :class:`StoreUnavailable` when sending the same work again may succeed
    (a lost or refused connection, a pool timeout, a deadlock or serialization failure rolled back), else
    :class:`StoreError` (a value or statement PostgreSQL refuses)."""
    kind = StoreUnavailable if isinstance(exc, psycopg.OperationalError) else StoreError
    return kind(f"{shown_url(url)}: {_first_line(exc)}")


def _version_number(stored: str) -> int:
    """The stored schema version as a number (a version that is none is a database to refuse)."""
    if not stored.isdigit():
        raise StoreError(f"schema version {stored!r} is not one shopsense wrote")
    return int(stored)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_EMBEDDED_ONLY = ("memory_limit", "threads", "checkpoint_mb", "read_only")
"""Tuning the services pass for the embedded store; a server is tuned on the server (and admits readers
beside a writer, so ``read_only`` has nothing to do here)."""


def open_postgres(url: str, target: str, options: dict[str, Any]) -> PostgresStore:
    """The ``postgresql://`` opener registered with :func:`shopsense.store.base.register_backend`."""
    return PostgresStore(url, **{k: v for k, v in options.items() if k not in _EMBEDDED_ONLY})


def _time_range(start: str | None, end: str | None, column: str = "ts") -> tuple[str, list[Any]]:
    """A WHERE clause (or nothing) keeping ``column`` in ``[start, end)``, and its parameters."""
    where, params = [], []
    if start:
        where.append(f"{column} >= %s::TIMESTAMPTZ")
        params.append(start)
    if end:
        where.append(f"{column} < %s::TIMESTAMPTZ")
        params.append(end)
    return ("WHERE " + " AND ".join(where)) if where else "", params
