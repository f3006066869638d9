"""The embedded default store: one DuckDB file in the data directory, no server.

Writes are set-based and batched: one Arrow stream goes in as one statement inside one
transaction (DuckDB commits cost milliseconds each, so row-at-a-time writes would crawl).
Dense integer ids (``user_idx``, ``item_idx``) are assigned here and never leave the store.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from shopsense.domain import RecordKind
from shopsense.errors import StoreError
from shopsense.exports import copy_to_file
from shopsense.ingest.source import Format, export_format
from shopsense.store import jobsql, journal
from shopsense.store.base import (
    EVENT_COLUMNS,
    MISSING_IMPRESSIONS,
    NestedTransactions,
    StoreSummary,
    WriteResult,
    erasure_hash,
    register_backend,
)
from shopsense.store.compaction import COMPACT_MARK, compact_or_warn
from shopsense.store.remembered import DenseIds, KeyIndex, Remembered

SCHEMA_VERSION = "1"
_TS_UTC = pa.timestamp("us", tz="UTC")
"""Tables a newer shopsense adds (``erasures``) are made by ``CREATE TABLE IF NOT EXISTS`` when a store
opens: the version moves only for a change older code would misread."""
log = logging.getLogger(__name__)

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR, value VARCHAR);
CREATE TABLE IF NOT EXISTS imports (
    batch_id INTEGER, kind VARCHAR, source VARCHAR, imported_at TIMESTAMPTZ,
    received BIGINT, written BIGINT, already_stored BIGINT);
CREATE TABLE IF NOT EXISTS users (
    user_idx INTEGER NOT NULL, user_id VARCHAR NOT NULL, attributes JSON,
    first_seen TIMESTAMPTZ, updated_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS items (
    item_idx INTEGER NOT NULL, item_id VARCHAR NOT NULL, title VARCHAR, description VARCHAR,
    category VARCHAR[], brand VARCHAR, price DOUBLE, currency VARCHAR, available BOOLEAN,
    stock BIGINT, attributes JSON, first_seen TIMESTAMPTZ, updated_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS events (
    key_hi UBIGINT NOT NULL, key_lo UBIGINT NOT NULL, event_id VARCHAR,
    user_idx INTEGER NOT NULL, item_idx INTEGER NOT NULL, type VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL, channel VARCHAR, session_id VARCHAR, quantity DOUBLE NOT NULL,
    value DOUBLE, rating DOUBLE, context JSON, batch_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS impressions (
    recommendation_id VARCHAR NOT NULL, user_idx INTEGER NOT NULL, item_idx INTEGER NOT NULL,
    position INTEGER NOT NULL, model_version VARCHAR, ts TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS campaigns (name VARCHAR NOT NULL, config JSON NOT NULL, created_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS segments (name VARCHAR NOT NULL, expression VARCHAR NOT NULL, created_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS assignments (
    campaign VARCHAR NOT NULL, user_id VARCHAR NOT NULL, variant VARCHAR NOT NULL, assigned_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, status VARCHAR NOT NULL, progress DOUBLE NOT NULL,
    message VARCHAR, result VARCHAR, error VARCHAR, created_at TIMESTAMPTZ NOT NULL, started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS job_rows (job_id VARCHAR NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS erasures (user_sha256 VARCHAR NOT NULL, erased_at TIMESTAMPTZ NOT NULL);
"""

_VERSION = "SELECT value FROM meta WHERE key = 'schema_version'"
_ALLOCATOR = ("allocator_flush_threshold = '32MB'", "allocator_background_threads = true")
"""DuckDB's jemalloc keeps up to ``allocator_flush_threshold`` (128 MiB by default) of freed memory per
task for reuse; a server runs many small queries for days, so that cache shows as RSS that grows for an
hour and is never given back. 32 MB keeps the reuse that makes small queries fast and returns the rest,
and background threads purge it off the request path."""
_LAST_BATCH = """SELECT greatest((SELECT coalesce(max(batch_id), 0) FROM imports),
    (SELECT coalesce(max(batch_id), 0) FROM events))"""
"""The last batch id used: the server's commits number their events without an import-log row each."""
_ITEM_FIELDS = ("title", "description", "category", "brand", "price", "currency", "available", "stock")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _writes(method: Callable[Concatenate[DuckDBStore, _P], _R]) -> Callable[Concatenate[DuckDBStore, _P], _R]:
    """A write entry point, refused on a store opened to read only. DuckDB refuses writes on a read-only
    connection itself, but a process that already has the file open to write gets that writable instance
    back for its "reader" (see :func:`_connect`): this guard keeps such a reader from writing all the same."""

    @functools.wraps(method)
    def guarded(self: DuckDBStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self.read_only:
            what = method.__name__.strip("_").replace("_", " ")
            raise StoreError(
                f"cannot {what} in {self.url}: it is open to read only here (a command that writes opens it alone)"
            )
        return method(self, *args, **kwargs)

    return guarded


class DuckDBStore(NestedTransactions, jobsql.SqlJobs):
    """Store backed by a DuckDB database file (or ``:memory:``)."""

    def __init__(
        self,
        url: str,
        path: str,
        memory_limit: str = "1GB",
        threads: int = 2,
        checkpoint_mb: int = 16,
        migrate: bool = False,
        read_only: bool = False,
    ) -> None:
        """``checkpoint_mb``: the write-ahead log is folded into the file once it is this large. Each
        fold costs a stall whatever its size, so a store taking many small commits (the server) folds
        less often; a crash then replays a longer log at the next start. ``migrate`` changes nothing
        here: one process owns the file, so the tables a newer shopsense adds are made when it opens.

        ``read_only``: open the file for reading only, so that any number of reading processes (stats,
        export, evaluate…) share it; none of them may write, and none runs migrations, replays the
        journal or compacts. DuckDB lets no reader in while a writer holds the file, nor a writer while
        readers do: the error then names the process that holds it (see :func:`_connect`)."""
        self.url = url
        self.applied: list[str] = []
        self._path: str | None = path
        self.read_only = read_only and path != ":memory:"  # a fresh in-memory store has nothing to read
        if not path:  # DuckDB would open a store in memory, and journal next to the working directory
            raise StoreError(f"cannot open {url}: no file named (duckdb:///path/to/file.duckdb, or duckdb:///:memory:)")
        if self.read_only:
            self._open_read_only(url, path, memory_limit, threads)
            return
        if path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # the folder cannot be made (a file in the way, no permission)
                raise StoreError(f"cannot open {url}: {exc}") from exc
        settings = (
            "TimeZone = 'UTC'",
            "enable_progress_bar = false",
            f"memory_limit = '{memory_limit}'",
            f"threads = {int(threads)}",
            "preserve_insertion_order = false",
            f"checkpoint_threshold = '{int(checkpoint_mb)}MB'",
            *_ALLOCATOR,
        )
        self._con = _connect(url, path, settings)
        self._con.execute(_DDL)
        self._remember = False
        self._memory: Remembered | None = None
        version = self._con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        if not version:
            self._con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        elif version[0][0] != SCHEMA_VERSION:
            self._con.close()  # refused: let go of the file at once, not when the error is collected
            raise StoreError(f"{url} has schema version {version[0][0]}; this shopsense reads {SCHEMA_VERSION}")
        self.journal_path: Path | None = None if path == ":memory:" else Path(f"{path}.journal")
        if self._compact_pending():  # erased at the last run, which ended before it could rewrite the file
            compact_or_warn(Path(path), self._con)
            self._con.close()  # it may still read the replaced file: the store goes on in the fresh one
            self._con = _connect(url, path, settings)
        if self.journal_path is not None and journal.segments(self.journal_path):
            try:
                journal.replay(self, self.journal_path)
            except BaseException:
                self._con.close()
                raise

    def _open_read_only(self, url: str, path: str, memory_limit: str, threads: int) -> None:
        """Open an existing store to read: no DDL, no migration, no journal replay, no compaction."""
        settings = ("TimeZone = 'UTC'", "enable_progress_bar = false", f"memory_limit = '{memory_limit}'",
                    f"threads = {int(threads)}", *_ALLOCATOR)  # fmt: skip
        self._remember, self._memory, self.journal_path = False, None, None
        if not Path(path).is_file():  # no store yet: reading it reads an empty one, and makes no file
            self._con = _connect(url, ":memory:", settings)
            self._con.execute(_DDL)
            self._con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
            return
        self._con = _connect(url, path, settings, read_only=True)
        tables = {row[0] for row in self._con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        missing = sorted(set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _DDL)) - tables)
        version = self._con.execute(_VERSION).fetchall() if "meta" in tables else []
        stale = [v[0] for v in version if v[0] != SCHEMA_VERSION]
        if missing or stale:
            self._con.close()
            why = f"schema version {stale[0]}" if stale else f"no table(s) {', '.join(missing)} yet"
            raise StoreError(
                f"cannot read {url}: it has {why}, and a command that only reads does not change the store; "
                "run `shopsense init` once (it needs the store alone), then this command again"
            )
        if journal.segments(Path(f"{path}.journal")):
            log.warning(
                "%s has journaled events that a server wrote but did not fold in before it stopped: this read "
                "leaves them out; the next command that writes (or `shopsense serve`) folds them in",
                url,
            )

    # -- writes -------------------------------------------------------------------------------

    @_writes
    def remember_keys(self) -> None:
        """Keep the stored event keys, user and item ids and the batch counter in memory from now on.

        Only for a process that is this store's only writer while it runs (the server): appends of
        event tables then check and extend what is remembered instead of scanning the events, users
        and items tables on every commit (see :mod:`shopsense.store.remembered`).
        """
        self._remember = True
        self._recall()

    def _recall(self) -> Remembered | None:
        """What is remembered, if asked for: rebuilt from the tables when a write dropped it."""
        if self._remember and self._memory is None:
            keys = self._con.execute("SELECT key_hi FROM events").fetchnumpy()["key_hi"]
            self._memory = Remembered(
                KeyIndex(np.asarray(keys, np.uint64)),
                self._dense_ids("users", "user_id", "user_idx"),
                self._dense_ids("items", "item_id", "item_idx"),
                self._count(_LAST_BATCH),
            )
        return self._memory

    def _dense_ids(self, table: str, id_col: str, idx_col: str) -> DenseIds:
        rows = self._con.sql(f"SELECT {id_col}, {idx_col} FROM {table}").to_arrow_table()
        return DenseIds(rows.column(0).to_pylist(), rows.column(1).to_pylist())

    def _next_batch(self) -> int:
        if self._memory is not None:
            return self._memory.batch + 1
        return self._count(_LAST_BATCH) + 1

    @_writes
    def log_import(self, batch_id: int, kind: str, source: str, received: int, written: int) -> None:
        """See :class:`shopsense.store.base.EventStore`."""
        self._con.execute(
            "INSERT INTO imports VALUES (?, ?, ?, now(), ?, ?, ?)",
            [batch_id, kind, source, received, written, received - written],
        )
        if self._memory is not None:
            self._memory.batch = max(self._memory.batch, batch_id)

    def _add_ids(self, table: str, id_col: str, idx_col: str, ids: str) -> int:
        """Give every id in relation ``ids`` (column ``id``) not yet stored the next dense index."""
        added = self._count(
            f"""INSERT INTO {table} ({idx_col}, {id_col}, updated_at)
            SELECT (SELECT coalesce(max({idx_col}), -1) FROM {table}) + row_number() OVER (ORDER BY id), id, now()
            FROM (SELECT DISTINCT id FROM {ids} WHERE id NOT IN (SELECT {id_col} FROM {table}))"""
        )
        if added and self._memory is not None:  # the new ids got the indices from the remembered next on
            known = self._memory.ids(table)
            rows = self._con.execute(f"SELECT {id_col}, {idx_col} FROM {table} WHERE {idx_col} >= ?", [known.next])
            known.add(dict(rows.fetchall()))
        return added

    def _insert_ids(self, table: str, id_col: str, idx_col: str, pending: dict[str, int]) -> None:
        """Store new ids with the indices the remembered ids gave them."""
        if pending:
            self._con.execute(
                f"""INSERT INTO {table} ({idx_col}, {id_col}, updated_at)
                SELECT unnest(?::INTEGER[]), unnest(?::VARCHAR[]), now()""",
                [list(pending.values()), list(pending)],
            )

    def _count(self, sql: str, params: list[Any] | None = None) -> int:
        rows = self._con.execute(sql, params or []).fetchall()
        return int(rows[0][0]) if rows else 0

    @contextmanager
    def _outermost(self) -> Iterator[None]:
        """See :class:`shopsense.store.base.NestedTransactions`."""
        self._con.execute("BEGIN TRANSACTION")
        try:
            try:
                yield
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")
        except BaseException:
            self._memory = None  # it may remember rows that were rolled back: rebuilt from the tables
            raise

    @_writes
    def append_events(
        self,
        events: pa.RecordBatchReader | pa.Table,
        user_ids: pa.Array,
        item_ids: pa.Array,
        source: str,
        *,
        log: bool = True,
    ) -> WriteResult:
        """See :class:`shopsense.store.base.EventStore`."""
        memory = self._recall() if isinstance(events, pa.Table) else None
        if memory is not None:
            return self._append_remembered(events, source, memory, log=log)
        self._memory = None  # a stream's keys and ids are not tracked: rebuilt from the tables on next use
        counted = _Counted(events) if isinstance(events, pa.RecordBatchReader) else None
        with self._registered(incoming_users=pa.table({"id": user_ids}), incoming_items=pa.table({"id": item_ids})):
            self._con.register("incoming_events", counted.reader() if counted is not None else events)
            try:
                with self.transaction():
                    batch = self._next_batch()
                    new_users = self._add_ids("users", "user_id", "user_idx", "incoming_users")
                    new_items = self._add_ids("items", "item_id", "item_idx", "incoming_items")
                    if counted is not None:
                        # An Arrow stream has no row count, so DuckDB may build its hash tables on the
                        # (huge) stream instead of the (small) id tables: 3x slower on 10M events.
                        # Keep the written order: the stream probes, users/items/events build. A table
                        # (the API's small commits) has a row count: the optimizer then builds on it
                        # rather than on every stored event.
                        self._con.execute("SET disabled_optimizers = 'build_side_probe_side'")
                    written = self._count(
                        f"""INSERT INTO events
                        SELECT e.key_hi, e.key_lo, e.event_id, u.user_idx, i.item_idx, e.type, e.timestamp,
                               e.channel, e.session_id, e.quantity, e.value, e.rating, e.context, {batch}
                        FROM incoming_events e
                        LEFT JOIN users u ON u.user_id = e.user_id
                        LEFT JOIN items i ON i.item_id = e.item_id
                        ANTI JOIN events s ON s.key_hi = e.key_hi AND s.key_lo = e.key_lo"""
                    )
                    received = counted.rows if counted is not None else events.num_rows
                    if log:
                        self.log_import(batch, "events", source, received, written)
            finally:
                self._con.execute("RESET disabled_optimizers")
                self._con.unregister("incoming_events")
        return WriteResult(batch, received, written, received - written, new_users, new_items)

    def _append_remembered(self, events: pa.Table, source: str, memory: Remembered, *, log: bool) -> WriteResult:
        """``append_events`` for a table, with the tables remembered: no stored row is read unless an
        event's key may be stored, and new users and items get their indices from memory. The ids
        come from the rows themselves: the distinct ids given with them are those, by contract.

        A write of one statement (no new ids, no log row) runs without BEGIN and COMMIT of its own:
        a statement alone is already all-or-nothing, and each extra statement costs a fixed 0.2 ms
        or more, which is most of a small commit."""
        users, new_users = _dense(memory.users, events.column("user_id"))
        items, new_items = _dense(memory.items, events.column("item_id"))
        fresh = pa.array(~self._stored(events, memory.keys))
        rows = {**{name: events.column(name) for name in EVENT_COLUMNS}, "user_id": users, "item_id": items}
        table = pa.table([rows[name] for name in EVENT_COLUMNS], names=list(EVENT_COLUMNS)).filter(fresh)
        statements = bool(new_users) + bool(new_items) + bool(table.num_rows) + log
        batch = self._next_batch()
        with self.transaction() if statements > 1 else nullcontext():
            self._insert_ids("users", "user_id", "user_idx", new_users)
            self._insert_ids("items", "item_id", "item_idx", new_items)
            if table.num_rows:  # the events table's columns: EVENT_COLUMNS with dense ids, then batch_id
                batches = pa.array(np.full(table.num_rows, batch, np.int32))
                self._con.from_arrow(table.append_column("batch_id", batches)).insert_into("events")
            if log:
                self.log_import(batch, "events", source, events.num_rows, table.num_rows)
        memory.batch = batch
        memory.users.add(new_users)
        memory.items.add(new_items)
        memory.keys.add(table.column("key_hi").to_numpy())
        written = table.num_rows
        return WriteResult(batch, events.num_rows, written, events.num_rows - written, len(new_users), len(new_items))

    def _stored(self, events: pa.Table, keys: KeyIndex) -> np.ndarray:
        """Which events are stored already: exact, reading only the stored keys sharing a high half with one."""
        high = events.column("key_hi").to_numpy()
        maybe = keys.maybe_stored(high)
        if not maybe.any():
            return maybe
        found = self._con.execute(
            "SELECT key_hi, key_lo FROM events WHERE key_hi IN (SELECT unnest(?::UBIGINT[]))", [high[maybe].tolist()]
        ).fetchnumpy()
        stored: np.ndarray = np.isin(
            _pairs(high, events.column("key_lo").to_numpy()), _pairs(found["key_hi"], found["key_lo"])
        )
        return stored

    @_writes
    def upsert_items(self, items: pa.RecordBatchReader, source: str) -> WriteResult:
        """See :class:`shopsense.store.base.CatalogStore`."""
        sets = ", ".join(f"{f} = coalesce(n.{f}, items.{f})" for f in _ITEM_FIELDS)
        return self._upsert(
            items,
            source,
            "items",
            "item_id",
            "item_idx",
            f"""UPDATE items SET {sets},
                attributes = CASE WHEN n.attributes IS NULL THEN items.attributes
                    ELSE json_merge_patch(coalesce(items.attributes, '{{}}'::JSON), n.attributes) END,
                first_seen = least(items.first_seen, n.first_seen), updated_at = now()
            FROM incoming n WHERE items.item_id = n.item_id""",
        )

    @_writes
    def upsert_users(self, users: pa.RecordBatchReader, source: str) -> WriteResult:
        """See :class:`shopsense.store.base.UserStore`."""
        return self._upsert(
            users,
            source,
            "users",
            "user_id",
            "user_idx",
            """UPDATE users SET
                attributes = CASE WHEN n.attributes IS NULL THEN users.attributes
                    ELSE json_merge_patch(coalesce(users.attributes, '{}'::JSON), n.attributes) END,
                first_seen = least(users.first_seen, n.first_seen), updated_at = now()
            FROM incoming n WHERE users.user_id = n.user_id""",
        )

    def _upsert(
        self, rows: pa.RecordBatchReader, source: str, table: str, id_col: str, idx_col: str, update: str
    ) -> WriteResult:
        con = self._con
        con.register("incoming_stream", rows)
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM incoming_stream")
        finally:
            con.unregister("incoming_stream")
        received = self._count("SELECT count(*) FROM incoming")
        try:
            with self.transaction():
                batch = self._next_batch()
                con.execute(f"CREATE OR REPLACE TEMP VIEW incoming_ids AS SELECT {id_col} AS id FROM incoming")
                new = self._add_ids(table, id_col, idx_col, "incoming_ids")
                con.execute(update)
                self.log_import(batch, table, source, received, received)
        finally:
            con.execute("DROP VIEW IF EXISTS incoming_ids")
            con.execute("DROP TABLE IF EXISTS incoming")
        return WriteResult(
            batch,
            received,
            received,
            0,
            new_users=new if table == "users" else 0,
            new_items=new if table == "items" else 0,
        )

    def _registered(self, **tables: pa.Table) -> _Registered:
        return _Registered(self._con, tables)

    # -- reads --------------------------------------------------------------------------------

    def scan_events(
        self, start: str | None = None, end: str | None = None, user_ids: list[str] | None = None
    ) -> pa.Table:
        """See :class:`shopsense.store.base.EventStore`."""
        where: list[str] = []
        params: list[Any] = []
        if user_ids is not None:
            where.append("u.user_id IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(user_ids))
        if start:
            where.append("e.ts >= CAST(? AS TIMESTAMPTZ)")
            params.append(start)
        if end:
            where.append("e.ts < CAST(? AS TIMESTAMPTZ)")
            params.append(end)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return self._con.sql(f"{_EVENTS_VIEW} {clause} ORDER BY e.ts, e.key_hi", params=params).to_arrow_table()

    def scan_items(self) -> pa.Table:
        """See :class:`shopsense.store.base.CatalogStore`."""
        return self._con.sql(
            "SELECT item_id, title, description, category, brand, price, available, stock,"
            " attributes::VARCHAR AS attributes FROM items ORDER BY item_idx"
        ).to_arrow_table()

    def summary(self, top: int = 10) -> StoreSummary:
        """See :class:`shopsense.store.base.Store`."""
        con = self._con
        ((users, guests),) = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE (attributes->>'guest')::BOOLEAN) FROM users"
        ).fetchall()
        items = self._count("SELECT count(*) FROM items")
        ((events, first, last, net_qty, net_rev),) = con.execute(
            """SELECT count(*), strftime(min(ts), '%Y-%m-%dT%H:%M:%SZ'), strftime(max(ts), '%Y-%m-%dT%H:%M:%SZ'),
                coalesce(sum(CASE type WHEN 'purchase' THEN quantity WHEN 'return' THEN -quantity END), 0),
                coalesce(sum(CASE type WHEN 'purchase' THEN value WHEN 'return' THEN -value END), 0)
            FROM events"""
        ).fetchall()
        by_type = dict(con.execute("SELECT type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall())
        by_channel = dict(
            con.execute(
                "SELECT coalesce(channel, '(none)'), count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        )
        funnel = [
            {"step": step, "events": int(n_events), "users": int(n_users)}
            for step, n_events, n_users in con.execute(
                """SELECT t.step, count(e.type), count(DISTINCT e.user_idx)
                FROM (VALUES (1, 'view'), (2, 'cart'), (3, 'purchase')) t(ord, step)
                LEFT JOIN events e ON e.type = t.step GROUP BY t.ord, t.step ORDER BY t.ord"""
            ).fetchall()
        ]
        categories = [
            {"category": c, "events": int(n), "purchases": int(p)}
            for c, n, p in con.execute(
                """SELECT i.category[1], count(*), count(*) FILTER (WHERE e.type = 'purchase')
                FROM events e JOIN items i USING (item_idx) WHERE len(i.category) > 0
                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?""",
                [top],
            ).fetchall()
        ]
        imports = [
            dict(
                zip(
                    ("batch_id", "kind", "source", "imported_at", "received", "written", "already_stored"),
                    r,
                    strict=True,
                )
            )
            for r in con.execute(
                "SELECT batch_id, kind, source, strftime(imported_at, '%Y-%m-%dT%H:%M:%SZ'), received, written, "
                "already_stored FROM imports ORDER BY batch_id"
            ).fetchall()
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
        return self._con.sql(
            f"""WITH e AS (
                SELECT CAST(timezone('UTC', ts) AS DATE) AS day, type, coalesce(channel, '(none)') AS channel,
                       user_idx, quantity, value FROM events {where})
            SELECT day, type, channel, count(*) AS events, count(DISTINCT user_idx) AS users,
                   CAST(coalesce(sum(quantity), 0) AS DOUBLE) AS quantity,
                   CAST(coalesce(sum(value), 0) AS DOUBLE) AS value
            FROM e GROUP BY GROUPING SETS ((day, type, channel), (day))
            ORDER BY day, type NULLS FIRST, channel NULLS FIRST""",
            params=params,
        ).to_arrow_table()

    def category_activity(self, start: str | None = None, end: str | None = None, top: int = 10) -> pa.Table:
        """See :class:`shopsense.store.base.InsightStore`."""
        where, params = _time_range(start, end, "e.ts")
        return self._con.sql(
            f"""SELECT i.category[1] AS category, count(*) AS events, count(DISTINCT e.user_idx) AS users,
                   count(*) FILTER (WHERE e.type = 'purchase') AS purchases,
                   CAST(coalesce(sum(CASE e.type WHEN 'purchase' THEN e.value WHEN 'return' THEN -e.value END), 0)
                        AS DOUBLE) AS revenue
            FROM events e JOIN items i USING (item_idx)
            {where + " AND" if where else "WHERE"} len(i.category) > 0
            GROUP BY 1 ORDER BY events DESC, category LIMIT {int(top)}""",
            params=params,
        ).to_arrow_table()

    def item_activity(self, item_ids: list[str]) -> pa.Table:
        """See :class:`shopsense.store.base.InsightStore`."""
        return self._con.sql(
            """SELECT i.item_id, e.type, count(*) AS events, count(DISTINCT e.user_idx) AS users,
                   CAST(coalesce(sum(e.quantity), 0) AS DOUBLE) AS quantity,
                   CAST(coalesce(sum(e.value), 0) AS DOUBLE) AS value
            FROM events e JOIN items i USING (item_idx) WHERE i.item_id IN (SELECT unnest(?::VARCHAR[]))
            GROUP BY 1, 2 ORDER BY 1, 2""",
            params=[list(item_ids)],
        ).to_arrow_table()

    def import_log(self, limit: int = 100) -> pa.Table:
        """See :class:`shopsense.store.base.InsightStore`."""
        return self._con.sql(
            f"""SELECT batch_id, kind, source, imported_at, received, written, already_stored
            FROM imports ORDER BY batch_id DESC LIMIT {int(limit)}"""
        ).to_arrow_table()

    def export(self, kind: RecordKind, path: Path) -> int:
        """See :class:`shopsense.store.base.Store`; written by :func:`shopsense.exports.copy_to_file`."""
        # CSV has no lists: a category path is written the way an import splits it again.
        category = "array_to_string(category, ' > ')" if export_format(path)[0] is Format.CSV else "category"
        query = {
            RecordKind.EVENTS: _EVENTS_VIEW,
            RecordKind.ITEMS: f"SELECT * EXCLUDE (item_idx, updated_at) REPLACE ({category} AS category) FROM items "
            "ORDER BY item_idx",
            RecordKind.USERS: "SELECT * EXCLUDE (user_idx, updated_at) FROM users ORDER BY user_idx",
        }[kind]
        return copy_to_file(self._con, query, path)

    # -- serving: impressions, erasure, export -----------------------------------------------

    @_writes
    def append_impressions(self, rows: pa.Table) -> list[str]:
        """See :class:`shopsense.store.base.ServingStore`."""
        with self._registered(incoming_impressions=rows), self.transaction():
            unknown = self._con.execute(
                "SELECT DISTINCT n.item_id FROM incoming_impressions n ANTI JOIN items i ON i.item_id = n.item_id"
            ).fetchall()
            new_users = pa.table({"id": pa.array(sorted(set(rows.column("user_id").to_pylist())), pa.string())})
            with self._registered(incoming_users=new_users):
                self._add_ids("users", "user_id", "user_idx", "incoming_users")
            self._con.execute(
                """INSERT INTO impressions
                SELECT n.recommendation_id, u.user_idx, i.item_idx, n.position, n.model_version, n.timestamp
                FROM incoming_impressions n
                JOIN users u ON u.user_id = n.user_id JOIN items i ON i.item_id = n.item_id"""
            )
            return [row[0] for row in unknown]

    def impression_report(self, hours: float, click_types: list[str], purchase_types: list[str]) -> pa.Table:
        """See :class:`shopsense.store.base.ServingStore`."""
        return self._con.sql(
            """WITH hits AS (
                SELECT m.recommendation_id, m.item_idx, m.model_version,
                       bool_or(e.type IN (SELECT unnest($1::VARCHAR[]))) AS clicked,
                       bool_or(e.type IN (SELECT unnest($2::VARCHAR[]))) AS bought,
                       coalesce(sum(e.value) FILTER (WHERE e.type IN (SELECT unnest($2::VARCHAR[]))), 0) AS revenue
                FROM impressions m LEFT JOIN events e
                  ON e.user_idx = m.user_idx AND e.item_idx = m.item_idx
                 AND e.ts >= m.ts AND e.ts < m.ts + to_microseconds(CAST($3 * 3600e6 AS BIGINT))
                GROUP BY ALL)
            SELECT coalesce(model_version, 'unknown') AS model_version, count(*) AS impressions,
                   count(DISTINCT recommendation_id) AS recommendations,
                   count(*) FILTER (WHERE clicked) AS clicks, count(*) FILTER (WHERE bought) AS purchases,
                   sum(revenue) AS revenue
            FROM hits GROUP BY ALL ORDER BY model_version""",
            params=[click_types, purchase_types, hours],
        ).to_arrow_table()

    def memory_held(self) -> int:
        """See :class:`shopsense.store.base.ServingStore`."""
        buffers = self._con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0]
        return int(buffers or 0) + (self._memory.nbytes if self._memory is not None else 0)

    def scan_impressions(self) -> pa.Table:
        """See :class:`shopsense.store.base.ServingStore`."""
        return self._con.sql(
            """SELECT m.recommendation_id, u.user_id, i.item_id, m.position, m.model_version, m.ts AS timestamp
            FROM impressions m JOIN users u USING (user_idx) JOIN items i USING (item_idx)
            ORDER BY m.ts, m.recommendation_id, m.position, u.user_id, i.item_id"""
        ).to_arrow_table()

    @_writes
    def merge_impressions(self, rows: pa.Table) -> int:
        """See :class:`shopsense.store.base.ServingStore`."""
        with self._registered(incoming_impressions=rows), self.transaction():
            return self._count(f"INSERT INTO impressions {MISSING_IMPRESSIONS.format(ts='timestamp')}")

    @_writes
    def erase_user(self, user_id: str) -> dict[str, int]:
        """See :class:`shopsense.store.base.ServingStore`.

        Deleted rows keep their bytes in the file's blocks until it is rewritten: the erasure marks the
        file for :func:`~shopsense.store.compaction.compact_file`, which the store runs when it closes
        (or, after a crash, when it next opens), and folds the write-ahead log into the file at once
        (when not inside a larger transaction), so the log no longer holds the user's rows either.
        """
        with self.transaction():
            found = self._con.execute("SELECT user_idx FROM users WHERE user_id = ?", [user_id]).fetchall()
            counts = {"events": 0, "impressions": 0, "users": 0}
            if found:  # assignments may name ids the store has no record of: those are erased below too
                counts = {table: self._deleted(table, found[0][0]) for table in counts}
                self._memory = None  # the user's id is gone; rebuilt from the tables on next use
            counts["assignments"] = len(
                self._con.execute("DELETE FROM assignments WHERE user_id = ? RETURNING 1", [user_id]).fetchall()
            )
            if self.load_profiles() is not None:
                counts["profiles"] = len(
                    self._con.execute("DELETE FROM profiles WHERE user_id = ? RETURNING 1", [user_id]).fetchall()
                )
            counts["job_rows"] = self._erase_job_rows(user_id)
            self._con.execute("INSERT INTO erasures VALUES (?, now())", [erasure_hash(user_id)])
            if any(counts.values()):
                self._con.execute("DELETE FROM meta WHERE key = ?", [COMPACT_MARK])
                self._con.execute("INSERT INTO meta VALUES (?, '1')", [COMPACT_MARK])
        if any(counts.values()) and not self._depth:
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:  # another thread's transaction holds it: the log is folded later
                log.info("no checkpoint after the erasure: %s", exc)
        return counts

    def tombstones(self) -> dict[str, datetime]:
        """See :class:`shopsense.store.base.ServingStore`."""
        rows = self._con.execute("SELECT user_sha256, max(erased_at) FROM erasures GROUP BY ALL").fetchall()
        return {user: at.astimezone(UTC) for user, at in rows}

    @_writes
    def add_tombstones(self, tombstones: Mapping[str, datetime]) -> int:
        """See :class:`shopsense.store.base.ServingStore`."""
        incoming = pa.table(
            {"h": pa.array(list(tombstones), pa.string()), "t": pa.array(list(tombstones.values()), _TS_UTC)}
        )
        with self._registered(incoming_tombstones=incoming):
            return self._count(
                """INSERT INTO erasures SELECT h, t FROM incoming_tombstones n
                WHERE NOT EXISTS (SELECT 1 FROM erasures e WHERE e.user_sha256 = n.h AND e.erased_at >= n.t)"""
            )

    def _compact_pending(self) -> bool:
        if self._path in (None, ":memory:"):
            return False
        return bool(self._count("SELECT count(*) FROM meta WHERE key = ?", [COMPACT_MARK]))

    def _deleted(self, table: str, user_idx: int) -> int:
        sql = f"DELETE FROM {table} WHERE user_idx = ? RETURNING user_idx"
        return len(self._con.execute(sql, [user_idx]).fetchall())

    def user_record(self, user_id: str) -> dict[str, Any] | None:
        """See :class:`shopsense.store.base.ServingStore`."""
        rows = self._con.execute(
            "SELECT user_id, attributes::VARCHAR, first_seen, updated_at FROM users WHERE user_id = ?", [user_id]
        ).fetchall()
        if not rows:
            return None
        _, attributes, first_seen, updated_at = rows[0]
        return {"user_id": user_id, "attributes": attributes, "first_seen": first_seen, "updated_at": updated_at}

    # -- marketing: profiles, campaigns, assignments ------------------------------------------

    @_writes
    def save_profiles(self, profiles: pa.Table) -> int:
        """See :class:`shopsense.store.base.MarketingStore`."""
        with self._registered(incoming_profiles=profiles), self.transaction():
            self._con.execute("CREATE OR REPLACE TABLE profiles AS SELECT * FROM incoming_profiles")
        return int(profiles.num_rows)

    def load_profiles(self) -> pa.Table | None:
        """See :class:`shopsense.store.base.MarketingStore`."""
        exists = self._con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'profiles'").fetchall()
        if not exists[0][0]:
            return None
        return self._con.sql("SELECT * FROM profiles ORDER BY user_id").to_arrow_table()

    def guest_user_ids(self) -> list[str]:
        """See :class:`shopsense.store.base.MarketingStore`."""
        rows = self._con.execute(
            "SELECT user_id FROM users WHERE coalesce((attributes->>'guest')::BOOLEAN, FALSE)"
        ).fetchall()
        return [row[0] for row in rows]

    @_writes
    def save_campaign(self, name: str, config_json: str) -> None:
        """See :class:`shopsense.store.base.MarketingStore`."""
        with self.transaction():
            self._con.execute("DELETE FROM campaigns WHERE name = ?", [name])
            self._con.execute("INSERT INTO campaigns VALUES (?, ?, now())", [name, config_json])

    def campaigns(self) -> dict[str, str]:
        """See :class:`shopsense.store.base.MarketingStore`."""
        rows = self._con.execute("SELECT name, config::VARCHAR FROM campaigns ORDER BY created_at").fetchall()
        return {name: config for name, config in rows}

    @_writes
    def save_segment(self, name: str, expression: str | None) -> None:
        """See :class:`shopsense.store.base.MarketingStore`."""
        with self.transaction():
            self._con.execute("DELETE FROM segments WHERE name = ?", [name])
            if expression is not None:
                self._con.execute("INSERT INTO segments VALUES (?, ?, now())", [name, expression])

    def saved_segments(self) -> dict[str, str]:
        """See :class:`shopsense.store.base.MarketingStore`."""
        rows = self._con.execute("SELECT name, expression FROM segments ORDER BY created_at, name").fetchall()
        return {name: expression for name, expression in rows}

    @_writes
    def add_assignments(self, campaign: str, rows: pa.Table) -> int:
        """See :class:`shopsense.store.base.MarketingStore`."""
        with self._registered(incoming_assignments=rows), self.transaction():
            return self._count(
                """INSERT INTO assignments
                SELECT ?, n.user_id, n.variant, n.assigned_at FROM incoming_assignments n
                WHERE n.user_id NOT IN (SELECT user_id FROM assignments WHERE campaign = ?)""",
                [campaign, campaign],
            )

    def assignments(self, campaign: str) -> pa.Table:
        """See :class:`shopsense.store.base.MarketingStore`."""
        return self._con.sql(
            "SELECT user_id, variant, assigned_at FROM assignments WHERE campaign = ? ORDER BY user_id",
            params=[campaign],
        ).to_arrow_table()

    def close(self) -> None:
        """See :class:`shopsense.store.base.Store`; a file that still holds erased rows' bytes is rewritten
        (:func:`~shopsense.store.compaction.compact_file`) once closed."""
        try:
            pending = not self.read_only and self._compact_pending()
        except duckdb.ConnectionException:  # closed already
            pending = False
        try:
            if pending and self._path is not None:  # with the file still open and locked: see compact_file
                compact_or_warn(Path(self._path), self._con)
        finally:
            self._con.close()

    # -- jobs ---------------------------------------------------------------------------------

    def handle(self) -> DuckDBStore:
        """See :class:`shopsense.store.base.Store`: a cursor, DuckDB's own connection to the same database
        for another thread (one process holds the file, so no second open). It has no journal and remembers
        no keys: the server's writer alone writes events."""
        other = object.__new__(DuckDBStore)
        other.url, other.applied, other.journal_path, other._path = self.url, [], None, None
        other._remember, other._memory, other.read_only = False, None, self.read_only
        other._con = self._con.cursor()
        other._con.execute("SET TimeZone = 'UTC'")  # a session setting: a cursor starts with the default
        return other

    def _job_query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """See :class:`shopsense.store.jobsql.SqlJobs`."""
        return self._con.execute(sql, params).fetchall()

    @_writes
    def _job_change(self, sql: str, params: list[Any]) -> int:
        """See :class:`shopsense.store.jobsql.SqlJobs` (DuckDB answers a write with its row count)."""
        return self._count(sql, params)


_EVENTS_VIEW = """SELECT e.event_id, u.user_id, i.item_id, e.type, e.ts AS timestamp, e.channel, e.session_id,
    e.quantity, e.value, e.rating, e.context
FROM events e JOIN users u USING (user_idx) JOIN items i USING (item_idx)"""


def _dense(ids: DenseIds, rows: pa.ChunkedArray) -> tuple[pa.Array, dict[str, int]]:
    """Each row's dense index, and the ids not stored yet with the indices they get."""
    indices, pending = ids.resolve(rows.to_pylist())
    return pa.array(indices, pa.int32()), pending


def _pairs(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """128-bit keys as single comparable values (for set membership)."""
    keys: np.ndarray = np.stack([np.asarray(high, np.uint64), np.asarray(low, np.uint64)], axis=1)
    return keys.view(np.dtype((np.void, 16))).ravel()


def _connect(url: str, path: str, settings: Sequence[str], *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the file (or ``:memory:``) with the session ``settings`` (``name = value``); a StoreError
    when it cannot be opened (locked by another process, not a DuckDB file, no permission), naming the
    process that holds the file and why this one cannot share it."""
    try:
        try:
            con = duckdb.connect(path, read_only=read_only)
        except duckdb.ConnectionException as exc:
            if not (read_only and "different configuration" in str(exc)):
                raise
            con = duckdb.connect(path)  # this process has the file open to write: a reader shares that instance
    except OSError as exc:
        raise StoreError(f"cannot open {url}: {exc}") from exc
    except duckdb.Error as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise StoreError(_locked(url, text, read_only)) from exc
        raise StoreError(f"cannot open {url}: {text.splitlines()[0]}") from exc
    try:
        for setting in settings:
            con.execute(f"SET {setting}")
    except BaseException:
        con.close()
        raise
    return con


def _locked(url: str, text: str, read_only: bool) -> str:
    """Why the file is locked, from DuckDB's lock error: who holds it (its command line, from its PID) and
    what this command wants that cannot be shared."""
    pid = re.search(r"\(PID (\d+)\)", text)
    holder = f"another process, {_command_of(int(pid.group(1)))}," if pid else "another process"
    if read_only:
        return (
            f"cannot open {url} to read: {holder} has it open to write, and DuckDB lets no reader in beside a "
            "writer (that command needs the store alone while it writes). Commands that only read (stats, export, "
            "segment, recommend, evaluate) run side by side: run this one when that one ends"
        )
    return (
        f"cannot open {url}: {holder} has it open (a running import or server, or a command reading it), and this "
        "command may write the store, so it needs it alone: DuckDB admits one writer and no reader beside it. "
        "Run it when that one ends"
    )


def _command_of(pid: int) -> str:
    """``shopsense stats`` (PID 123): the holder's command line as far as this machine shows it."""
    try:
        argv = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return f"PID {pid}" + (" (this one)" if pid == os.getpid() else "")
    at = next((i for i, a in enumerate(argv) if Path(a).name == "shopsense" or a == "shopsense"), None)
    shown = re.sub(r"\s+", " ", " ".join(["shopsense", *argv[at + 1 :]] if at is not None else argv))
    shown = shown if len(shown) <= 100 else shown[:97] + "..."
    return f"`{shown}` (PID {pid})"


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


class _Registered:
    """Register Arrow tables as views for the duration of a block."""

    def __init__(self, con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> None:
        self._con = con
        self._tables = tables

    def __enter__(self) -> None:
        for name, table in self._tables.items():
            self._con.register(name, table)

    def __exit__(self, *exc: object) -> None:
        for name in self._tables:
            self._con.unregister(name)


class _Counted:
    """Wrap a record-batch stream so the rows that went through can be counted afterwards."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self._reader = reader
        self.rows = 0

    def reader(self) -> pa.RecordBatchReader:
        def batches() -> Any:
            for batch in self._reader:
                self.rows += batch.num_rows
                yield batch

        return pa.RecordBatchReader.from_batches(self._reader.schema, batches())


def _open(url: str, target: str, options: dict[str, Any]) -> DuckDBStore:
    return DuckDBStore(url, target, **options)


register_backend("duckdb", _open)


def _time_range(start: str | None, end: str | None, column: str = "ts") -> tuple[str, list[Any]]:
    """A WHERE clause (or nothing) keeping ``column`` in ``[start, end)``, and its parameters."""
    where, params = [], []
    if start:
        where.append(f"{column} >= CAST(? AS TIMESTAMPTZ)")
        params.append(start)
    if end:
        where.append(f"{column} < CAST(? AS TIMESTAMPTZ)")
        params.append(end)
    return ("WHERE " + " AND ".join(where)) if where else "", params
