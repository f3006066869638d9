"""The store contract, run against every store backend (``BACKENDS``).

Each test talks to a store only through :mod:`shopsense.store.base` (``open_store`` and the
``Store`` protocols) and through the importer, the store's main caller; what differs per backend
(how an empty store is made, how its schema version is forged, which targets cannot be opened,
how another process holds it) lives in one :class:`Backend` entry. Adding the PostgreSQL backend
is one more entry in ``BACKENDS``.

Concurrency: the protocol promises one writer at a time. The embedded DuckDB store is a file that
one process opens (a second process is refused, with a :class:`StoreError`), and the server's
:class:`~shopsense.services.writer.StoreWriter` funnels every store call through one thread. So
the contract tested here is *sequential* writers: several handles on one store, opened one after
another or side by side in one process, each commit visible to the next writer, dense ids and batch
ids never reused. What DuckDB gets for free and a PostgreSQL backend must add on its own:

* real concurrent writers (two servers, an import while the server runs): the anti-join
  de-duplication and the ``max(idx) + row_number()`` dense ids race there. It needs unique keys
  on (``key_hi``, ``key_lo``), ``users.user_id``, ``items.item_id`` and ``assignments``
  (``campaign``, ``user_id``) with ``ON CONFLICT DO NOTHING`` (or SERIALIZABLE plus retry), and
  ids and batch ids from sequences, before concurrent writers can be promised and tested here;
* a "held" store is a DuckDB file lock; a server store has no such state, so ``hold`` is None there
  and the held-store test is skipped unless the backend defines what "unavailable" means;
* typed errors: every driver error at open (bad host, bad credentials, no such database) must come
  out as :class:`StoreError`, as DuckDB's do;
* profiles of any Arrow schema (int8, timestamps with zone, NaN, list<struct>) stored and read back
  with the same types, replaced as a whole in one transaction;
* JSON attributes merged key by key as DuckDB's ``json_merge_patch`` (RFC 7386: nested objects
  merged too, a key set to null removed; PostgreSQL's ``jsonb || jsonb`` does neither), ``first_seen``
  kept as the earliest with NULLs ignored (``least``), ``UBIGINT`` key halves (PostgreSQL has no
  unsigned 64-bit type: ``numeric``, or the halves offset by 2**63 into ``bigint``);
* ``transaction()`` joining nested uses, and a failed Arrow stream rolling back what was written;
* the schema version in a table the backend reads on open, refused when it is not its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsense.domain import RecordKind
from shopsense.errors import StoreError, ValidationFailed
from shopsense.ingest.importer import Importer, ImportReport
from shopsense.ingest.mapping import load_mapping
from shopsense.settings import Settings
from shopsense.store import jobsql, open_store
from shopsense.store.base import EVENT_COLUMNS, JobStatus, ReplicaFeed, Store, erased_since, erasure_hash
from tests import postgres
from tests.conftest import write

# -- backends ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """How the contract reaches one kind of store."""

    name: str
    empty: Callable[[Path, str], AbstractContextManager[str]]
    """URL of a new, empty store named ``name`` (scratch space under the path); removed afterwards."""
    set_schema_version: Callable[[str, str], None]
    """Write a schema version into the (closed) store at a URL, as a future shopsense would."""
    unopenable: Callable[[Path], list[str]]
    """URLs of this scheme that name something that is not a usable store."""
    hold: Callable[[str], AbstractContextManager[None]] | None = None
    """Make the store at a URL unavailable to this process for a while (another process holds it)."""


@contextmanager
def _duckdb_empty(scratch: Path, name: str) -> Iterator[str]:
    yield f"duckdb:///{scratch / 'stores' / f'{name}.duckdb'}"


def _duckdb_set_schema_version(url: str, version: str) -> None:
    """In another process, as another shopsense would: it fails while this process still holds the file."""
    path = url.split(":///", 1)[1]
    script = (
        f"import duckdb; c = duckdb.connect({path!r}); "
        f"c.execute(\"UPDATE meta SET value = {version!r} WHERE key = 'schema_version'\"); c.close()"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=60)


def _duckdb_unopenable(scratch: Path) -> list[str]:
    folder = scratch / "a-folder.duckdb"
    folder.mkdir()
    garbage = scratch / "garbage.duckdb"
    garbage.write_bytes(b"not a database, just text\n" * 512)
    # a folder, a file that is no database, a store below a file, and no file named at all
    return [f"duckdb:///{folder}", f"duckdb:///{garbage}", f"duckdb:///{garbage}/below/s.duckdb", "duckdb:///"]


@contextmanager
def _duckdb_hold(url: str) -> Iterator[None]:
    path = url.split(":///", 1)[1]
    script = f"import duckdb, time; c = duckdb.connect({path!r}); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def _pg_backend_missing() -> str | None:
    """Why the PostgreSQL params cannot run yet (no ``shopsense.store.postgres`` registering ``postgresql``)."""
    try:
        import shopsense.store.postgres  # noqa: F401
    except ImportError as exc:
        return f"no PostgreSQL store backend yet (shopsense.store.postgres: {exc})"
    from shopsense.store.base import _BACKENDS

    if "postgresql" not in _BACKENDS:
        return "shopsense.store.postgres does not register the 'postgresql' scheme yet"
    return None


@contextmanager
def _pg_empty(scratch: Path, name: str) -> Iterator[str]:
    """A fresh database on the session's test server (tests/postgres.py), dropped afterwards."""
    with postgres.require_server().database(name) as url:
        yield url


def _pg_set_schema_version(url: str, version: str) -> None:
    """In another process, as another shopsense would (the backend keeps it in ``meta``, as DuckDB does)."""
    script = (
        f"import psycopg; c = psycopg.connect({url!r}); "
        f"n = c.execute(\"UPDATE meta SET value = %s WHERE key = 'schema_version'\", [{version!r}]).rowcount; "
        "c.commit(); c.close(); assert n == 1, 'no schema_version row in meta'"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=60)


def _pg_unopenable(scratch: Path) -> list[str]:
    server = postgres.require_server()
    # a port nobody listens on, a database that does not exist, a role that does not exist
    return [
        f"postgresql://{postgres.ROLE}@{postgres.HOST}:{postgres.free_port()}/postgres",
        server.url("no_such_database"),
        server.url("postgres", user="no_such_role"),
    ]


_PG_MISSING = _pg_backend_missing()

BACKENDS = [
    Backend("duckdb", _duckdb_empty, _duckdb_set_schema_version, _duckdb_unopenable, _duckdb_hold),
    # hold: None, a server store has no "held" state (see above); the server: tests/postgres.py, on first use
    pytest.param(
        Backend("postgresql", _pg_empty, _pg_set_schema_version, _pg_unopenable),
        id="postgresql",
        marks=pytest.mark.skipif(_PG_MISSING is not None, reason=_PG_MISSING or ""),
    ),
]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.param
    return backend


@pytest.fixture
def make_store(backend: Backend, tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    """Open a new empty store (one per name); every handle opened through it is closed afterwards."""
    with ExitStack() as stack:

        def make(name: str = "main") -> Store:
            url = stack.enter_context(backend.empty(tmp_path, name))
            opened = open_store(url)
            stack.callback(opened.close)
            return opened

        yield make


@pytest.fixture
def store(make_store: Callable[[str], Store]) -> Store:
    return make_store("main")


@pytest.fixture
def handles() -> Iterator[Callable[[str], Store]]:
    """Open further handles on a store by URL; closed afterwards."""
    with ExitStack() as stack:

        def handle(url: str) -> Store:
            opened = open_store(url)
            stack.callback(opened.close)
            return opened

        yield handle


# -- helpers ----------------------------------------------------------------------------------

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def ingest(store: Store, settings: Settings, path: Path, kind: RecordKind = RecordKind.EVENTS) -> ImportReport:
    """Import a file into ``store`` the way ``shopsense import`` does."""
    return Importer(store, settings).import_file(path, load_mapping(None, kind, {}))


def csv_file(tmp_path: Path, name: str, header: str, *lines: str) -> Path:
    return write(tmp_path, name, "\n".join([header, *lines]) + "\n")


def keyed_events(rows: list[tuple[int, str, str, str, datetime]]) -> pa.Table:
    """Events as ``append_events`` takes them, from (key, user_id, item_id, type, timestamp)."""
    keys, users, items, types, times = (list(c) for c in zip(*rows, strict=True))
    n = len(rows)
    columns: dict[str, pa.Array] = {
        "key_hi": pa.array(keys, pa.uint64()),
        "key_lo": pa.array([2**64 - 1 - k for k in keys], pa.uint64()),  # the high bit set: unsigned keys
        "event_id": pa.array([f"k{k}" for k in keys], pa.string()),
        "user_id": pa.array(users, pa.string()),
        "item_id": pa.array(items, pa.string()),
        "type": pa.array(types, pa.string()),
        "timestamp": pa.array(times, TS),
        "channel": pa.array(["web"] * n, pa.string()),
        "session_id": pa.array([None] * n, pa.string()),
        "quantity": pa.array([1.0] * n, pa.float64()),
        "value": pa.array([None] * n, pa.float64()),
        "rating": pa.array([None] * n, pa.float64()),
        "context": pa.array([None] * n, pa.string()),
    }
    return pa.table([columns[c] for c in EVENT_COLUMNS], names=list(EVENT_COLUMNS))


def append(store: Store, table: pa.Table, source: str = "test", *, stream: bool = True, log: bool = True) -> Any:
    users = pa.array(sorted(set(table.column("user_id").to_pylist())), pa.string())
    items = pa.array(sorted(set(table.column("item_id").to_pylist())), pa.string())
    events: pa.Table | pa.RecordBatchReader = table
    if stream:
        events = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))
    return store.append_events(events, users, items, source, log=log)


def event_rows(store: Store, **scan: Any) -> list[tuple[Any, ...]]:
    """Stored events as comparable tuples (event_id, user, item, type, time), oldest first."""
    events = store.scan_events(**scan)
    return list(
        zip(
            *(events.column(c).to_pylist() for c in ("event_id", "user_id", "item_id", "type", "timestamp")),
            strict=True,
        )
    )


def exported(store: Store, kind: RecordKind, path: Path) -> list[dict[str, Any]]:
    """A kind's stored rows through ``export`` (Parquet), JSON read as values, in a fixed order."""
    store.export(kind, path)
    order = {RecordKind.EVENTS: ["timestamp", "user_id", "item_id", "type"]}.get(kind, [f"{kind.value[:-1]}_id"])
    rows: list[dict[str, Any]] = pq.read_table(path).sort_by([(c, "ascending") for c in order]).to_pylist()
    for row in rows:
        for column in ("attributes", "context"):
            if row.get(column) is not None:
                row[column] = json.loads(str(row[column]))
    return rows


def plain(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with NaN made comparable."""
    return [
        {k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in table.to_pylist()
    ]


# -- idempotent ingest ------------------------------------------------------------------------

HEAD = "event_id,user_id,item_id,type,timestamp"


def test_an_event_id_sent_again_is_stored_once_across_imports_and_handles(
    store: Store, settings: Settings, tmp_path: Path, handles: Callable[[str], Store]
) -> None:
    first = csv_file(tmp_path, "a.csv", HEAD, "e1,u1,i1,view,2024-03-01T12:00:00Z")
    second = csv_file(
        tmp_path,
        "b.csv",
        HEAD,
        "e1,u1,i1,purchase,2024-03-01T12:30:00Z",  # the id decides: a re-sent id is the stored event
        "e2,u1,i2,view,2024-03-01T13:00:00Z",
    )
    assert ingest(store, settings, first).rows_written == 1
    report = ingest(store, settings, second)
    assert (report.rows_written, report.already_stored) == (1, 1)
    url = store.url
    store.close()
    again = handles(url)
    report = ingest(again, settings, second)
    assert (report.rows_read, report.rows_written, report.already_stored) == (2, 0, 2)
    assert [(r[0], r[3]) for r in event_rows(again)] == [("e1", "view"), ("e2", "view")]


def test_the_same_event_without_id_in_two_imports_is_stored_once(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    a = csv_file(tmp_path, "a.csv", "user_id,item_id,type,timestamp", "u1,i1,view,2024-03-01T12:00:00Z")
    # Other columns' order, another file, the same instant written in another zone: the same event.
    b = csv_file(tmp_path, "b.csv", "timestamp,type,item_id,user_id", "2024-03-01T13:00:00+01:00,view,i1,u1")
    c = csv_file(tmp_path, "c.csv", "user_id,item_id,type,timestamp", "u1,i1,view,2024-03-01T12:00:01Z")
    assert ingest(store, settings, a).rows_written == 1
    report = ingest(store, settings, b)
    assert (report.rows_written, report.already_stored) == (0, 1)
    assert ingest(store, settings, c).rows_written == 1, "a second later is another event"
    assert store.summary().events == 2


def test_overlapping_files_store_each_event_once(store: Store, settings: Settings, tmp_path: Path) -> None:
    rows = [f"u{n % 2},i{n},view,2024-03-0{n}T10:00:00Z" for n in range(1, 6)]
    head = "user_id,item_id,type,timestamp"
    assert ingest(store, settings, csv_file(tmp_path, "jan.csv", head, *rows[:3])).rows_written == 3
    report = ingest(store, settings, csv_file(tmp_path, "feb.csv", head, *rows[1:]))
    assert (report.rows_read, report.rows_written, report.already_stored) == (4, 2, 2)
    assert sorted(r[2] for r in event_rows(store)) == ["i1", "i2", "i3", "i4", "i5"]


def test_identical_lines_in_one_file_are_separate_events_and_stay_so(
    store: Store, settings: Settings, tmp_path: Path, handles: Callable[[str], Store]
) -> None:
    head = "user_id,item_id,type,timestamp"
    twice = "u1,i1,purchase,2024-03-01T12:00:00Z"
    path = csv_file(tmp_path, "basket.csv", head, twice, twice, "u1,i2,view,2024-03-01T12:01:00Z")
    report = ingest(store, settings, path)
    assert (report.rows_written, report.duplicates_kept) == (3, 1)
    url = store.url
    store.close()
    writer = handles(url)
    assert ingest(writer, settings, path).rows_written == 0, "numbered repeats collapse on re-import"
    thrice = csv_file(tmp_path, "more.csv", head, twice, twice, twice)
    report = ingest(writer, settings, thrice)
    assert (report.rows_written, report.already_stored) == (1, 2), "only the third repeat is new"
    assert [r[2] for r in event_rows(writer)].count("i1") == 3


def test_keys_already_stored_are_skipped_by_append_events(store: Store) -> None:
    table = keyed_events([(k, f"u{k % 2}", f"i{k % 3}", "view", T0 + timedelta(minutes=k)) for k in range(6)])
    first = append(store, table)
    assert (first.received, first.written, first.already_stored, first.new_users, first.new_items) == (6, 6, 0, 2, 3)
    again = append(store, table.slice(3), stream=False)  # a table (the server's path) as well as a stream
    assert (again.received, again.written, again.already_stored, again.new_users) == (3, 0, 3, 0)
    other_low = table.slice(0, 1).set_column(EVENT_COLUMNS.index("key_lo"), "key_lo", pa.array([5], pa.uint64()))
    assert append(store, other_low).written == 1, "keys are 128 bits: the low half counts too"
    assert store.summary().events == 7


def test_a_store_that_remembers_its_keys_for_its_only_writer_dedupes_the_same(store: Store) -> None:
    """The server's single-writer fast path (optional: ``remember_keys``) keeps the same contract."""
    if not hasattr(store, "remember_keys"):
        pytest.skip("this backend keeps nothing in memory for a single writer")
    store.remember_keys()
    day = [(k, f"u{k % 2}", f"i{k % 3}", "view", T0 + timedelta(minutes=k)) for k in range(8)]
    assert append(store, keyed_events(day[:4]), stream=False).written == 4
    assert append(store, keyed_events(day[2:6]), stream=False).written == 2
    other_low = keyed_events(day[:1]).set_column(EVENT_COLUMNS.index("key_lo"), "key_lo", pa.array([5], pa.uint64()))
    assert append(store, other_low, stream=False).written == 1, "the same high half, another key"
    assert append(store, keyed_events(day[4:7])).written == 1, "a stream between table appends"
    again = append(store, keyed_events(day[5:8]), stream=False, log=False)
    assert (again.written, again.already_stored, again.new_users) == (1, 2, 0)
    with pytest.raises(RuntimeError), store.transaction():
        append(store, keyed_events([(50, "u50", "i50", "view", T0)]), stream=False)
        raise RuntimeError("rolled back")
    redo = append(store, keyed_events([(50, "u50", "i50", "view", T0)]), stream=False)
    assert (redo.written, redo.new_users, redo.new_items) == (1, 1, 1), "nothing rolled back is remembered"
    store.erase_user("u1")
    back = append(store, keyed_events([(1, "u1", "i1", "view", T0 + timedelta(minutes=1))]), stream=False)
    assert (back.written, back.new_users) == (1, 1), "an erased user's events and id are forgotten"
    store.upsert_users(_reader(_users([("u60", None, None)])), "users")
    assert append(store, keyed_events([(60, "u60", "i1", "view", T0)]), stream=False).new_users == 0
    summary = store.summary()
    assert (summary.events, summary.users) == (8 + 1 + 1 - 4 + 1 + 1, 4)  # u1 had four
    assert sorted(r[0] for r in event_rows(store) if r[1] == "u1") == ["k1"]


# -- writers one after another ----------------------------------------------------------------


def test_sequential_writers_on_two_handles_see_each_others_commits(
    store: Store, handles: Callable[[str], Store]
) -> None:
    url = store.url
    a = keyed_events([(1, "u1", "i1", "view", T0), (2, "u2", "i1", "view", T0)])
    b = keyed_events([(2, "u2", "i1", "view", T0), (3, "u3", "i2", "cart", T0)])
    first = append(store, a, "a")
    store.close()
    writer = handles(url)
    second = append(writer, b, "b")
    assert (second.written, second.already_stored, second.new_users, second.new_items) == (1, 1, 1, 1)
    assert second.batch_id > first.batch_id
    writer.close()
    reader = handles(url)
    assert [r[0] for r in event_rows(reader)] == ["k1", "k2", "k3"]
    assert [i["batch_id"] for i in reader.summary().imports] == [first.batch_id, second.batch_id]


def test_handles_open_side_by_side_in_one_process_take_turns(store: Store, handles: Callable[[str], Store]) -> None:
    other = handles(store.url)
    one = append(store, keyed_events([(1, "u1", "i1", "view", T0)]))
    two = append(other, keyed_events([(1, "u1", "i1", "view", T0), (2, "u9", "i1", "view", T0)]))
    assert (two.written, two.already_stored, two.new_users, two.new_items) == (1, 1, 1, 0)
    assert two.batch_id > one.batch_id
    other.upsert_users(pa.RecordBatchReader.from_batches(*_one_batch(_users([("u1", '{"tier": 2}', None)]))), "o")
    seen = store.user_record("u1")
    assert seen is not None and json.loads(seen["attributes"]) == {"tier": 2}, "the other handle's commit"
    assert store.summary().events == other.summary().events == 2


def test_a_store_held_by_another_process_is_refused_with_a_store_error(backend: Backend, store: Store) -> None:
    if backend.hold is None:
        pytest.skip(f"{backend.name}: no state in which another process holds the store")
    url = store.url
    append(store, keyed_events([(1, "u1", "i1", "view", T0)]))
    store.close()
    with backend.hold(url), pytest.raises(StoreError, match="another process"):
        open_store(url)
    reopened = open_store(url)
    try:
        assert reopened.summary().events == 1
    finally:
        reopened.close()


# -- transactions -----------------------------------------------------------------------------


def test_a_failed_transaction_leaves_nothing_and_nested_ones_join_it(store: Store) -> None:
    events = keyed_events([(1, "u1", "i1", "view", T0)])
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        with store.transaction():  # joins: its writes wait for the outer commit
            append(store, events)
            store.upsert_items(_reader(_items([("i7", "Cup", None, None, None)])), "items")
        store.save_campaign("c", "{}")
        raise RuntimeError("boom")
    summary = store.summary()
    assert (summary.events, summary.users, summary.items, summary.imports) == (0, 0, 0, [])
    assert store.campaigns() == {}
    with store.transaction():
        append(store, events)
    assert store.summary().events == 1


def test_a_stream_failing_midway_writes_nothing(store: Store) -> None:
    table = keyed_events([(k, "u1", "i1", "view", T0) for k in range(10)])

    def batches() -> Iterator[pa.RecordBatch]:
        yield from table.to_batches(max_chunksize=3)[:2]
        raise RuntimeError("connection lost")

    reader = pa.RecordBatchReader.from_batches(table.schema, batches())
    with pytest.raises(Exception, match="connection lost"):
        store.append_events(reader, pa.array(["u1"]), pa.array(["i1"]), "broken")
    summary = store.summary()
    assert (summary.events, summary.users, summary.items, summary.imports) == (0, 0, 0, [])


def test_a_failed_import_writes_nothing_and_logs_nothing(store: Store, settings: Settings, tmp_path: Path) -> None:
    bad = csv_file(
        tmp_path, "bad.csv", "user_id,item_id,type,timestamp", "u1,i1,view,2024-03-01T12:00:00Z", "u2,i2,view,never"
    )
    with pytest.raises(ValidationFailed):
        ingest(store, settings, bad)
    summary = store.summary()
    assert (summary.events, summary.users, summary.imports) == (0, 0, [])


# -- field-wise upserts -----------------------------------------------------------------------

ITEM_HEAD = "item_id,title,category,brand,price,currency,available,stock,attributes,first_seen"


def test_item_upserts_update_field_by_field(store: Store, settings: Settings, tmp_path: Path) -> None:
    ingest(
        store,
        settings,
        csv_file(tmp_path, "ev.csv", "user_id,item_id,type,timestamp", "u1,i1,view,2024-03-01T00:00:00Z"),
    )
    first = csv_file(
        tmp_path,
        "items1.csv",
        ITEM_HEAD,
        'i1,Cup,Home > Kitchen,Acme,3.5,EUR,true,4,"{""color"": ""blue"", ""size"": ""M""}",2024-03-01T00:00:00Z',
        "i2,Plate,Home,,1,EUR,,,,",
    )
    report = ingest(store, settings, first, RecordKind.ITEMS)
    assert (report.rows_written, report.new_items) == (2, 1), "i1 was made (bare) by its event"
    second = csv_file(
        tmp_path,
        "items2.csv",
        "item_id,price,attributes,first_seen",
        'i1,4.25,"{""size"": ""L"", ""material"": ""wood""}",2024-01-01T00:00:00Z',
    )
    assert ingest(store, settings, second, RecordKind.ITEMS).new_items == 0
    third = csv_file(
        tmp_path, "items3.csv", "item_id,title,available,first_seen", "i1,Blue cup,false,2024-06-01T00:00:00Z"
    )
    ingest(store, settings, third, RecordKind.ITEMS)
    ingest(store, settings, csv_file(tmp_path, "items4.csv", "item_id,title", "i1,"), RecordKind.ITEMS)  # all empty

    rows = {r["item_id"]: r for r in exported(store, RecordKind.ITEMS, tmp_path / "items.parquet")}
    cup = rows["i1"]
    assert (cup["title"], cup["category"], cup["brand"], cup["price"], cup["currency"]) == (
        "Blue cup",
        ["Home", "Kitchen"],
        "Acme",
        4.25,
        "EUR",
    )
    assert (cup["available"], cup["stock"]) == (False, 4), "false is a value, not a missing field"
    assert cup["attributes"] == {"color": "blue", "size": "L", "material": "wood"}
    assert cup["first_seen"] == datetime(2024, 1, 1, tzinfo=UTC), "first_seen keeps the earliest"
    assert (rows["i2"]["title"], rows["i2"]["attributes"], rows["i2"]["first_seen"]) == ("Plate", None, None)
    scanned = {r["item_id"]: r for r in store.scan_items().to_pylist()}
    assert (scanned["i1"]["title"], scanned["i1"]["price"], scanned["i1"]["available"]) == ("Blue cup", 4.25, False)
    assert store.summary().items == 2


def _users(rows: list[tuple[str, str | None, datetime | None]]) -> pa.Table:
    ids, attributes, first_seen = zip(*rows, strict=True)
    return pa.table(
        {
            "user_id": pa.array(ids, pa.string()),
            "attributes": pa.array(attributes, pa.string()),
            "first_seen": pa.array(first_seen, TS),
        }
    )


def _items(rows: list[tuple[str, str | None, float | None, str | None, datetime | None]]) -> pa.Table:
    """Items (item_id, title, price, attributes, first_seen); the other fields empty."""
    ids, titles, prices, attributes, first_seen = zip(*rows, strict=True)
    n = len(rows)
    return pa.table(
        {
            "item_id": pa.array(ids, pa.string()),
            "title": pa.array(titles, pa.string()),
            "description": pa.array([None] * n, pa.string()),
            "category": pa.array([None] * n, pa.list_(pa.string())),
            "brand": pa.array([None] * n, pa.string()),
            "price": pa.array(prices, pa.float64()),
            "currency": pa.array([None] * n, pa.string()),
            "available": pa.array([None] * n, pa.bool_()),
            "stock": pa.array([None] * n, pa.int64()),
            "attributes": pa.array(attributes, pa.string()),
            "first_seen": pa.array(first_seen, TS),
        }
    )


def _one_batch(table: pa.Table) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    return table.schema, table.to_batches()


def _reader(table: pa.Table) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(*_one_batch(table))


def test_user_upserts_merge_attributes_and_keep_the_earliest_first_seen(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    head = "user_id,attributes,first_seen"
    ingest(
        store,
        settings,
        csv_file(tmp_path, "u1.csv", head, 'u1,"{""country"": ""DE"", ""tier"": 1}",2024-03-01T00:00:00Z', "u2,,"),
        RecordKind.USERS,
    )
    result = store.upsert_users(
        _reader(_users([("u1", '{"tier": 2, "guest": false}', datetime(2024, 2, 1, tzinfo=UTC)), ("u3", None, None)])),
        "direct",
    )
    assert (result.received, result.written, result.new_users) == (2, 2, 1)
    store.upsert_users(_reader(_users([("u1", None, datetime(2024, 5, 1, tzinfo=UTC))])), "direct")
    store.upsert_users(_reader(_users([("u2", '{"guest": true}', datetime(2024, 4, 1, tzinfo=UTC))])), "direct")

    u1 = store.user_record("u1")
    assert u1 is not None
    assert json.loads(u1["attributes"]) == {"country": "DE", "tier": 2, "guest": False}
    assert u1["first_seen"] == datetime(2024, 2, 1, tzinfo=UTC)
    u2 = store.user_record("u2")
    assert u2 is not None and json.loads(u2["attributes"]) == {"guest": True}
    assert u2["first_seen"] == datetime(2024, 4, 1, tzinfo=UTC), "an unknown first_seen takes the first given"
    u3 = store.user_record("u3")
    assert u3 is not None and (u3["attributes"], u3["first_seen"]) == (None, None)
    assert store.user_record("nobody") is None
    assert store.guest_user_ids() == ["u2"]
    assert (store.summary().users, store.summary().guest_users) == (3, 1)


def test_an_event_for_a_known_user_keeps_the_users_record(store: Store) -> None:
    store.upsert_users(_reader(_users([("u1", '{"tier": 3}', T0)])), "users")
    result = append(store, keyed_events([(1, "u1", "i1", "view", T0 + timedelta(days=1))]))
    assert (result.new_users, result.new_items) == (0, 1)
    record = store.user_record("u1")
    assert record is not None and (json.loads(record["attributes"]), record["first_seen"]) == ({"tier": 3}, T0)


# -- erasure ----------------------------------------------------------------------------------


def _filled(store: Store) -> None:
    """Two users, each with events, impressions, an assignment and a profile."""
    store.upsert_items(_reader(_items([("i1", "Cup", 3.0, None, None), ("i2", "Pot", 9.0, None, None)])), "items")
    store.upsert_users(_reader(_users([("u1", '{"tier": 1}', T0), ("u2", '{"tier": 2}', T0)])), "users")
    append(
        store,
        keyed_events(
            [
                (1, "u1", "i1", "view", T0 + timedelta(minutes=1)),
                (2, "u1", "i2", "purchase", T0 + timedelta(minutes=2)),
                (3, "u2", "i1", "view", T0 + timedelta(minutes=3)),
            ]
        ),
    )
    store.append_impressions(_impressions([("r1", "u1", "i1", 1, "m1", T0), ("r1", "u1", "i2", 2, "m1", T0)]))
    store.append_impressions(_impressions([("r2", "u2", "i1", 1, "m1", T0)]))
    store.save_campaign("spring", '{"variants": ["a", "b"]}')
    store.add_assignments("spring", _assignments([("u1", "a"), ("u2", "b")]))
    store.save_profiles(_profiles(["u1", "u2"]))


def test_erasing_a_user_removes_only_that_users_rows(store: Store, handles: Callable[[str], Store]) -> None:
    _filled(store)
    before_u2 = store.user_record("u2")
    counts = store.erase_user("u1")
    assert {k: v for k, v in counts.items() if v} == {
        "events": 2,
        "impressions": 2,
        "users": 1,
        "assignments": 1,
        "profiles": 1,
    }
    assert not any(store.erase_user("u1").values()), "erased already"
    assert not any(store.erase_user("nobody").values())
    url = store.url
    store.close()
    after = handles(url)
    assert after.user_record("u1") is None
    assert after.user_record("u2") == before_u2
    assert [(r[0], r[1]) for r in event_rows(after)] == [("k3", "u2")]
    assert after.assignments("spring").column("user_id").to_pylist() == ["u2"]
    profiles = after.load_profiles()
    assert profiles is not None and profiles.column("user_id").to_pylist() == ["u2"]
    report = after.impression_report(1.0, ["view"], ["purchase"]).to_pylist()
    assert [(r["impressions"], r["recommendations"], r["clicks"]) for r in report] == [(1, 1, 1)]
    summary = after.summary()
    assert (summary.users, summary.items, summary.events) == (1, 2, 1), "items are not the user's"


def test_an_erasure_leaves_a_tombstone_of_the_ids_hash_only(store: Store, handles: Callable[[str], Store]) -> None:
    """Bundles trained before an erasure check the tombstones; they outlive the store handle and hold
    the id's SHA-256, never the id."""
    _filled(store)
    assert store.tombstones() == {}
    store.erase_user("u1")
    store.erase_user("u1")
    store.erase_user("walk-in")  # nothing stored: still a tombstone, the id may be in a bundle
    url = store.url
    store.close()
    after = handles(url)
    assert set(after.tombstones()) == {erasure_hash("u1"), erasure_hash("walk-in")}
    assert erasure_hash("u1") == hashlib.sha256(b"u1").hexdigest()


def test_tombstones_keep_the_latest_erasure_and_those_from_elsewhere_are_added_once(store: Store) -> None:
    """A second erasure (the user came back) moves the tombstone's time on; a restore brings its backup's
    tombstones (hashes and times): newer ones are recorded, known ones not again, and none reaches the
    replica feed (no replica holds such a user)."""
    store.erase_user("u1")
    first = store.tombstones()[erasure_hash("u1")]
    assert first.tzinfo is not None and abs((datetime.now(UTC) - first).total_seconds()) < 60
    store.erase_user("u1")
    assert store.tombstones()[erasure_hash("u1")] >= first
    old, new = first - timedelta(days=1), first + timedelta(days=1)
    incoming = {erasure_hash("u1"): old, erasure_hash("u9"): new}
    assert store.add_tombstones(incoming) == 1, "u1's is older than the store's own"
    assert store.add_tombstones(incoming) == 0
    assert store.tombstones()[erasure_hash("u9")] == new
    assert erased_since(store.tombstones(), first + timedelta(hours=1)) == {erasure_hash("u9")}
    assert erased_since(store.tombstones(), None) == {erasure_hash("u1"), erasure_hash("u9")}
    if isinstance(store, ReplicaFeed):
        start = store.feed_start()
        store.add_tombstones({erasure_hash("u8"): new})
        assert store.changes_since(start.cursor).erasures.num_rows == 0, "no id to drop from memory"


def test_erasing_a_user_removes_them_from_job_outputs(store: Store) -> None:
    """An audience job keeps its customers beside the job (``job_rows``): erased users leave it too."""
    store.create_job("j1", "audience")
    store.save_job_rows("j1", pa.table({"user_id": ["u1", "u2", "u1"], "score": [1.0, 2.0, 3.0]}))
    store.create_job("j2", "report")
    store.save_job_rows("j2", pa.table({"item_id": ["u1"]}))
    assert store.erase_user("u1")["job_rows"] == 2
    kept = store.job_rows("j1")
    assert kept is not None and kept.to_pydict() == {"user_id": ["u2"], "score": [2.0]}
    other = store.job_rows("j2")
    assert other is not None and other.num_rows == 1, "only user_id columns name users"


def test_erasure_decodes_only_the_job_outputs_that_name_the_user(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """It runs inside the erasure's transaction, on the server's writer: an output without a ``user_id``
    column, or without the user in it, is not decoded whole."""
    store.create_job("j1", "audience")
    store.save_job_rows("j1", pa.table({"user_id": ["u1", "u2"], "score": [1.0, 2.0]}))
    store.create_job("j2", "audience")
    store.save_job_rows("j2", pa.table({"user_id": ["u3"], "score": [3.0]}))
    store.create_job("j3", "report")
    store.save_job_rows("j3", pa.table({"item_id": ["u1"], "n": [4]}))
    decoded: list[int] = []
    whole = jobsql.rows_table

    def counted(blob: bytes) -> pa.Table:
        table = whole(blob)
        decoded.append(table.num_rows)
        return table

    monkeypatch.setattr(jobsql, "rows_table", counted)
    assert store.erase_user("u1")["job_rows"] == 1
    assert decoded == [2], "only j1 was read whole"
    monkeypatch.undo()
    kept = store.job_rows("j1")
    assert kept is not None and kept.to_pydict() == {"user_id": ["u2"], "score": [2.0]}
    for job in ("j2", "j3"):
        rows = store.job_rows(job)
        assert rows is not None and rows.num_rows == 1, "left as they were"


def test_erasing_a_user_the_store_knows_only_by_assignment_removes_the_assignment(store: Store) -> None:
    """Audiences may name ids with no record (``campaign assign --users``): erasure still finds them."""
    store.save_campaign("spring", "{}")
    store.add_assignments("spring", _assignments([("walk-in", "a"), ("u2", "b")]))
    assert store.user_record("walk-in") is None
    counts = store.erase_user("walk-in")
    assert (counts["users"], counts.get("assignments")) == (0, 1)
    assert store.assignments("spring").column("user_id").to_pylist() == ["u2"]


# -- export -----------------------------------------------------------------------------------

EXPORT_ITEMS = (
    ITEM_HEAD,
    'i1,"Cup, blue",Home > Kitchen,Acme,3.5,EUR,true,4,"{""color"": ""blue"", ""size"": {""cm"": 9}}",'
    "2024-01-01T00:00:00Z",
    "i2,Plate,Home,,0,EUR,false,,,",
    'i3,"Say ""hi""",,,,,,,"{""tags"": [""a"", ""b""]}",',
)
EXPORT_USERS = (
    "user_id,attributes,first_seen",
    'u1,"{""country"": ""DE""}",2024-01-01T00:00:00Z',
    "u2,,",
    'u3,"{""guest"": true}",',
)
EXPORT_EVENTS = (
    "event_id,user_id,item_id,type,timestamp,channel,session_id,quantity,value,rating,context",
    'e1,u1,i1,purchase,2024-01-02T10:00:00Z,store,s1,2,7,,"{""coupon"": ""X""}"',
    ",u1,i2,view,2024-01-02T10:01:00+01:00,web,,,,,",
    ",u1,i2,view,2024-01-02T10:01:00+01:00,web,,,,,",
    ',u2,i1,rating,2024-01-03T00:00:00Z,app,,,,4.5,"{""page"": {""n"": 1}}"',
)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_every_kind_round_trips_through_export_into_a_fresh_store(
    make_store: Callable[[str], Store], settings: Settings, tmp_path: Path, suffix: str
) -> None:
    source = make_store("source")
    ingest(source, settings, csv_file(tmp_path, "items.csv", *EXPORT_ITEMS), RecordKind.ITEMS)
    ingest(source, settings, csv_file(tmp_path, "users.csv", *EXPORT_USERS), RecordKind.USERS)
    ingest(source, settings, csv_file(tmp_path, "events.csv", *EXPORT_EVENTS))
    copy = make_store("copy")
    for kind, n in ((RecordKind.ITEMS, 3), (RecordKind.USERS, 3), (RecordKind.EVENTS, 4)):
        out = tmp_path / f"{kind.value}{suffix}"
        assert source.export(kind, out) == n
        report = ingest(copy, settings, out, kind)
        assert (report.rows_read, report.rows_written, report.rows_rejected) == (n, n, 0)
    for kind in RecordKind:
        original = exported(source, kind, tmp_path / f"a-{kind.value}.parquet")
        assert exported(copy, kind, tmp_path / f"b-{kind.value}.parquet") == original
    assert ingest(copy, settings, tmp_path / f"events{suffix}").rows_written == 0, "an export re-imports as no-op"
    assert copy.guest_user_ids() == ["u3"]


def test_an_empty_store_exports_empty_files(store: Store, tmp_path: Path) -> None:
    for kind in RecordKind:
        assert store.export(kind, tmp_path / f"{kind.value}.parquet") == 0
        assert pq.read_table(tmp_path / f"{kind.value}.parquet").num_rows == 0


# -- events read back -------------------------------------------------------------------------


def test_scan_events_filters_by_time_and_user_oldest_first(store: Store) -> None:
    times = [T0 + timedelta(hours=h) for h in (3, 1, 2, 0)]
    append(store, keyed_events([(k, f"u{k % 2}", "i1", "view", t) for k, t in enumerate(times)]))
    assert [r[0] for r in event_rows(store)] == ["k3", "k1", "k2", "k0"]
    window = event_rows(store, start=(T0 + timedelta(hours=1)).isoformat(), end=(T0 + timedelta(hours=3)).isoformat())
    assert [r[0] for r in window] == ["k1", "k2"], "start is inclusive, end exclusive"
    assert [r[0] for r in event_rows(store, user_ids=["u0"])] == ["k2", "k0"]
    assert event_rows(store, user_ids=[]) == []
    assert event_rows(store)[0][4] == T0


# -- profiles ---------------------------------------------------------------------------------


def _profiles(users: list[str], score: int = 5) -> pa.Table:
    """A profile batch with the awkward types real profiles have (int8, NaN, zoned times, list<struct>)."""
    n = len(users)
    interest = pa.struct([("tag", pa.string()), ("weight", pa.float64())])
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "as_of": pa.array([T0] * n, TS),
            "r_score": pa.array([score - i % 5 for i in range(n)], pa.int8()),
            "monetary": pa.array([float("nan") if i % 2 else 10.0 * i for i in range(n)], pa.float64()),
            "orders": pa.array(list(range(n)), pa.int64()),
            "interests": pa.array(
                [[{"tag": f"brand:{u}", "weight": 1.0}] if i % 2 else [] for i, u in enumerate(users)],
                pa.list_(interest),
            ),
            "lifecycle": pa.array([None if i % 3 == 2 else "active" for i in range(n)], pa.string()),
        }
    )


def test_profiles_are_saved_as_one_batch_and_read_back_with_their_types(
    store: Store, handles: Callable[[str], Store]
) -> None:
    assert store.load_profiles() is None
    batch = _profiles(["u3", "u1", "u2"])
    assert store.save_profiles(batch) == 3
    loaded = store.load_profiles()
    assert loaded is not None
    expected = batch.sort_by("user_id")
    assert plain(loaded) == plain(expected)
    for name in expected.column_names:
        want, got = expected.schema.field(name).type, loaded.schema.field(name).type
        assert got == want or (pa.types.is_list(got) and got.value_type == want.value_type), name
    smaller = _profiles(["u9"], score=1).drop_columns(["interests"]).append_column("p_alive", pa.array([0.5]))
    assert store.save_profiles(smaller) == 1
    url = store.url
    store.close()
    replaced = handles(url).load_profiles()
    assert replaced is not None and plain(replaced) == plain(smaller), "a save replaces the batch, columns too"


# -- campaigns and assignments ----------------------------------------------------------------


def _assignments(rows: list[tuple[str, str]], at: datetime = T0) -> pa.Table:
    users, variants = zip(*rows, strict=True)
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "variant": pa.array(variants, pa.string()),
            "assigned_at": pa.array([at] * len(rows), TS),
        }
    )


def test_campaigns_are_created_replaced_and_kept(store: Store, handles: Callable[[str], Store]) -> None:
    assert store.campaigns() == {}
    store.save_campaign("spring", '{"variants": ["a", "b"]}')
    store.save_campaign("winback", '{"variants": ["x"]}')
    store.save_campaign("spring", '{"variants": ["a", "b", "c"]}')
    url = store.url
    store.close()
    stored = handles(url).campaigns()
    assert {name: json.loads(config) for name, config in stored.items()} == {
        "spring": {"variants": ["a", "b", "c"]},
        "winback": {"variants": ["x"]},
    }


def test_segments_are_saved_replaced_deleted_and_kept(store: Store, handles: Callable[[str], Store]) -> None:
    assert store.saved_segments() == {}
    store.save_segment("loyal", "frequency >= 3")
    store.save_segment("lapsed", "recency_days > 90")
    store.save_segment("loyal", "frequency >= 5")
    store.save_segment("gone", "recency_days > 365")
    store.save_segment("gone", None)
    store.save_segment("never saved", None)
    url = store.url
    store.close()
    assert handles(url).saved_segments() == {"lapsed": "recency_days > 90", "loyal": "frequency >= 5"}


def test_assigned_users_keep_their_variant(store: Store, handles: Callable[[str], Store]) -> None:
    store.save_campaign("spring", "{}")
    store.save_campaign("winback", "{}")
    assert store.assignments("spring").num_rows == 0
    assert store.add_assignments("spring", _assignments([("u2", "b"), ("u1", "a")])) == 2
    later = T0 + timedelta(days=1)
    assert store.add_assignments("spring", _assignments([("u2", "a"), ("u3", "b")], at=later)) == 1
    assert store.add_assignments("winback", _assignments([("u2", "a")], at=later)) == 1, "campaigns are separate"
    url = store.url
    store.close()
    reopened = handles(url)
    assert reopened.assignments("spring").to_pylist() == [
        {"user_id": "u1", "variant": "a", "assigned_at": T0},
        {"user_id": "u2", "variant": "b", "assigned_at": T0},
        {"user_id": "u3", "variant": "b", "assigned_at": later},
    ]
    assert reopened.assignments("winback").column("variant").to_pylist() == ["a"]
    assert reopened.assignments("nothing").num_rows == 0


# -- impressions ------------------------------------------------------------------------------


def _impressions(rows: list[tuple[str, str, str, int, str | None, datetime]]) -> pa.Table:
    recs, users, items, positions, versions, times = zip(*rows, strict=True)
    return pa.table(
        {
            "recommendation_id": pa.array(recs, pa.string()),
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array(items, pa.string()),
            "position": pa.array(positions, pa.int32()),
            "model_version": pa.array(versions, pa.string()),
            "timestamp": pa.array(times, TS),
        }
    )


def test_impressions_are_attributed_to_later_clicks_and_purchases(store: Store) -> None:
    store.upsert_items(_reader(_items([("i1", "Cup", 3.0, None, None), ("i2", "Pot", 9.0, None, None)])), "items")
    events = keyed_events(
        [
            (1, "u1", "i1", "view", T0 - timedelta(minutes=5)),  # before the impression: not its effect
            (2, "u1", "i1", "view", T0 + timedelta(minutes=10)),
            (3, "u1", "i1", "purchase", T0 + timedelta(minutes=30)),
            (4, "u2", "i2", "purchase", T0 + timedelta(hours=2)),  # after the window
        ]
    )
    append(
        store, events.set_column(EVENT_COLUMNS.index("value"), "value", pa.array([None, None, 20.0, 9.0], pa.float64()))
    )
    unknown = store.append_impressions(
        _impressions(
            [
                ("r1", "u1", "i1", 1, "m1", T0),
                ("r1", "u1", "i2", 2, "m1", T0),
                ("r1", "u1", "gone", 3, "m1", T0),
                ("r2", "u2", "i2", 1, "m2", T0),
                ("r3", "new-user", "i1", 1, None, T0),
            ]
        )
    )
    assert unknown == ["gone"]
    assert store.user_record("new-user") is not None, "an impression's unknown user is created"
    report = {r["model_version"]: r for r in store.impression_report(1.0, ["view"], ["purchase"]).to_pylist()}
    assert sorted(report) == ["m1", "m2", "unknown"]
    m1 = report["m1"]
    assert (m1["impressions"], m1["recommendations"], m1["clicks"], m1["purchases"], m1["revenue"]) == (
        2,
        1,
        1,
        1,
        20.0,
    )
    m2 = report["m2"]
    assert (m2["impressions"], m2["clicks"], m2["purchases"], m2["revenue"]) == (1, 0, 0, 0.0)
    assert report["unknown"]["impressions"] == 1
    wide = {r["model_version"]: r for r in store.impression_report(3.0, ["view"], ["purchase"]).to_pylist()}
    assert (wide["m2"]["purchases"], wide["m2"]["revenue"]) == (1, 9.0)
    narrow = {r["model_version"]: r for r in store.impression_report(0.1, ["view"], ["purchase"]).to_pylist()}
    assert (narrow["m1"]["clicks"], narrow["m1"]["purchases"]) == (0, 0), "six minutes: the view came later"


def test_impressions_are_scanned_oldest_first_and_merged_once_repeats_kept(
    make_store: Callable[[str], Store],
) -> None:
    """What a backup keeps of impressions and how a restore adds them: a row shown twice stays twice, and
    merging the same rows again (or into the store they came from) adds nothing."""
    source = make_store("source")
    source.upsert_items(_reader(_items([("i1", "Cup", 3.0, None, None), ("i2", "Pot", 9.0, None, None)])), "items")
    later, earlier = T0 + timedelta(minutes=5), T0
    rows = [
        ("r2", "u2", "i2", 1, None, later),
        ("r1", "u1", "i1", 1, "m1", earlier),
        ("r1", "u1", "i1", 1, "m1", earlier),  # the same line twice: two impressions
        ("r1", "u1", "i2", 2, "m1", earlier),
    ]
    source.append_impressions(_impressions(rows))
    scanned = source.scan_impressions()
    assert scanned.column_names == ["recommendation_id", "user_id", "item_id", "position", "model_version", "timestamp"]
    assert [tuple(r.values()) for r in scanned.to_pylist()] == [rows[1], rows[2], rows[3], rows[0]]
    assert source.merge_impressions(scanned) == 0, "every row is stored already, the repeated one twice"

    copy = make_store("copy")
    copy.upsert_items(_reader(_items([("i1", "Cup", 3.0, None, None), ("i2", "Pot", 9.0, None, None)])), "items")
    copy.upsert_users(_reader(_users([("u1", None, None), ("u2", None, None)])), "users")
    copy.append_impressions(_impressions([rows[1]]))  # one copy of the repeated row is there already
    unknown = _impressions([("r9", "u1", "gone", 1, "m1", T0), ("r9", "nobody", "i1", 2, "m1", T0)])
    assert copy.merge_impressions(pa.concat_tables([scanned, unknown])) == 3, "the missing copy and two rows"
    assert copy.merge_impressions(scanned) == 0
    assert copy.scan_impressions().to_pylist() == scanned.to_pylist()
    assert copy.user_record("nobody") is None, "a merge creates no users"
    assert (
        copy.impression_report(1.0, ["view"], ["purchase"]).to_pylist()
        == source.impression_report(1.0, ["view"], ["purchase"]).to_pylist()
    )


# -- the import log ---------------------------------------------------------------------------


def test_the_import_log_counts_each_import(store: Store, settings: Settings, tmp_path: Path) -> None:
    items = csv_file(tmp_path, "items.csv", "item_id,title", "i1,Cup", "i2,Pot", "i3,Pan")
    events = csv_file(
        tmp_path,
        "events.csv",
        "user_id,item_id,type,timestamp",
        "u1,i1,view,2024-03-01T12:00:00Z",
        "u1,i1,view,2024-03-01T12:00:00Z",
        "u2,i2,cart,2024-03-01T12:05:00Z",
    )
    ingest(store, settings, items, RecordKind.ITEMS)
    ingest(store, settings, events)
    ingest(store, settings, events)
    log = store.summary().imports
    assert [(r["kind"], r["source"], r["received"], r["written"], r["already_stored"]) for r in log] == [
        ("items", str(items), 3, 3, 0),
        ("events", str(events), 3, 3, 0),
        ("events", str(events), 3, 0, 3),
    ]
    batches = [r["batch_id"] for r in log]
    assert batches == sorted(set(batches)), "every import has its own, increasing batch id"
    assert all(r["imported_at"] for r in log)


def test_unlogged_writes_are_summarised_by_log_import(store: Store) -> None:
    first = append(store, keyed_events([(1, "u1", "i1", "view", T0)]), stream=False, log=False)
    second = append(store, keyed_events([(1, "u1", "i1", "view", T0), (2, "u1", "i1", "view", T0)]), log=False)
    assert store.summary().imports == []
    assert second.batch_id > first.batch_id, "an unlogged write's batch id is not given out again"
    store.log_import(second.batch_id, "events", "server", 3, 2)
    (row,) = store.summary().imports
    assert (row["batch_id"], row["source"], row["received"], row["written"], row["already_stored"]) == (
        second.batch_id,
        "server",
        3,
        2,
        1,
    )
    third = append(store, keyed_events([(3, "u1", "i1", "view", T0)]))
    assert third.batch_id > second.batch_id
    assert [r["batch_id"] for r in store.summary().imports] == [second.batch_id, third.batch_id]


# -- schema version and typed errors ----------------------------------------------------------


def test_a_store_of_a_future_schema_version_is_refused(backend: Backend, store: Store) -> None:
    url = store.url
    append(store, keyed_events([(1, "u1", "i1", "view", T0)]))
    store.close()
    backend.set_schema_version(url, "999")
    with pytest.raises(StoreError, match="schema version 999") as refused:
        open_store(url)
    backend.set_schema_version(url, "1000")  # a refused store is let go at once, not held
    with pytest.raises(StoreError, match="schema version 1000"):
        open_store(url)
    assert refused.value is not None


def test_unusable_urls_and_targets_are_refused_with_a_store_error(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown scheme"):
        open_store(f"{backend.name}x:///somewhere")
    with pytest.raises(StoreError, match="three slashes"):
        open_store(f"{backend.name}://somewhere")
    for url in backend.unopenable(tmp_path):
        with pytest.raises(StoreError, match="cannot open"):
            open_store(url).close()


# -- jobs ---------------------------------------------------------------------------------------


def test_a_job_is_created_queued_then_updated_field_by_field(store: Store) -> None:
    store.create_job("j1", "audience")
    job = store.job("j1")
    assert job is not None and (job.kind, job.status, job.progress) == ("audience", JobStatus.QUEUED, 0.0)
    assert job.started_at is None and job.finished_at is None and job.created_at.tzinfo is not None
    store.update_job("j1", status=JobStatus.RUNNING)
    store.update_job("j1", progress=0.5, message="fitting")
    running = store.job("j1")
    assert running is not None and running.status is JobStatus.RUNNING and running.started_at is not None
    assert (running.progress, running.message, running.finished_at) == (0.5, "fitting", None)
    store.update_job("j1", status=JobStatus.SUCCEEDED, progress=1.0, result='{"size": 3}')
    done = store.job("j1")
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.message == "fitting", "kept"
    assert json.loads(done.result or "") == {"size": 3} and done.error is None
    assert done.finished_at is not None and done.started_at == running.started_at
    assert store.job("nope") is None


def test_recent_jobs_come_newest_first(store: Store) -> None:
    for job_id in ("a", "b", "c"):
        store.create_job(job_id, "profiles")
    assert [j.job_id for j in store.recent_jobs()] == ["c", "b", "a"]
    assert [j.job_id for j in store.recent_jobs(limit=2)] == ["c", "b"]


def test_unfinished_jobs_are_failed_as_interrupted(store: Store) -> None:
    for job_id in ("queued", "running", "done"):
        store.create_job(job_id, "train")
    store.update_job("running", status=JobStatus.RUNNING)
    store.update_job("done", status=JobStatus.SUCCEEDED, result="{}")
    assert store.fail_unfinished_jobs("interrupted", silent_s=3600) == 0, "changed within the hour: alive"
    assert store.fail_unfinished_jobs("interrupted") == 2
    jobs = {j.job_id: j for j in store.recent_jobs()}
    assert {k: (j.status, j.error) for k, j in jobs.items()} == {
        "queued": (JobStatus.FAILED, "interrupted"),
        "running": (JobStatus.FAILED, "interrupted"),
        "done": (JobStatus.SUCCEEDED, None),
    }
    assert jobs["running"].finished_at is not None
    assert store.fail_unfinished_jobs("interrupted") == 0


def test_a_jobs_rows_are_kept_beside_it_with_their_types(store: Store) -> None:
    rows = pa.table({"user_id": ["u1", "u2"], "score": [0.9, 0.1], "rank": pa.array([1, 2], pa.int32())})
    store.create_job("j1", "audience")
    assert store.job_rows("j1") is None
    store.save_job_rows("j1", rows)
    assert store.job_rows("j1") == rows


def test_another_handle_shares_the_database_and_closes_alone(store: Store) -> None:
    other = store.handle()
    other.create_job("j1", "audience")
    other.update_job("j1", status=JobStatus.RUNNING)
    seen = store.job("j1")
    assert seen is not None and seen.status is JobStatus.RUNNING
    store.create_job("j2", "train")
    assert {j.job_id for j in other.recent_jobs()} == {"j1", "j2"}
    other.close()
    assert store.job("j2") is not None, "closing the handle leaves the store open"


# -- dashboard aggregates (InsightStore) -------------------------------------------------------


def _insight_shop(store: Store, settings: Settings, tmp_path: Path) -> None:
    """Three items (two categorised), six events over three UTC days, one channel missing."""
    items = csv_file(tmp_path, "items.csv", "item_id,category", "i1,Home > Kitchen", "i2,Garden", "i3,")
    events = csv_file(
        tmp_path,
        "events.csv",
        "user_id,item_id,type,timestamp,channel,quantity,value",
        "u1,i1,view,2024-03-01T10:00:00Z,web,1,",
        "u1,i1,purchase,2024-03-01T11:00:00Z,web,2,10.0",
        "u2,i1,view,2024-03-01T23:30:00Z,app,1,",
        "u2,i2,purchase,2024-03-02T00:30:00Z,app,1,5.0",
        "u1,i1,return,2024-03-02T09:00:00Z,web,1,5.0",
        "u3,i3,view,2024-03-03T12:00:00+02:00,,1,",
    )
    ingest(store, settings, items, RecordKind.ITEMS)
    ingest(store, settings, events)


def test_activity_counts_events_per_utc_day_type_and_channel_with_daily_totals(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    _insight_shop(store, settings, tmp_path)
    rows = [
        (r["day"].isoformat(), r["type"], r["channel"], r["events"], r["users"], r["quantity"], r["value"])
        for r in store.activity().to_pylist()
    ]
    assert rows == [
        ("2024-03-01", None, None, 3, 2, 4.0, 10.0),
        ("2024-03-01", "purchase", "web", 1, 1, 2.0, 10.0),
        ("2024-03-01", "view", "app", 1, 1, 1.0, 0.0),
        ("2024-03-01", "view", "web", 1, 1, 1.0, 0.0),
        ("2024-03-02", None, None, 2, 2, 2.0, 10.0),
        ("2024-03-02", "purchase", "app", 1, 1, 1.0, 5.0),
        ("2024-03-02", "return", "web", 1, 1, 1.0, 5.0),
        ("2024-03-03", None, None, 1, 1, 1.0, 0.0),
        ("2024-03-03", "view", "(none)", 1, 1, 1.0, 0.0),
    ]
    window = store.activity("2024-03-02T00:00:00Z", "2024-03-03T00:00:00Z").to_pylist()
    assert {r["day"].isoformat() for r in window} == {"2024-03-02"}, "start inclusive, end exclusive"
    assert store.activity("2030-01-01T00:00:00Z").num_rows == 0


def test_category_activity_ranks_top_level_categories_with_revenue_net_of_returns(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    _insight_shop(store, settings, tmp_path)
    assert store.category_activity().to_pylist() == [
        {"category": "Home", "events": 4, "users": 2, "purchases": 1, "revenue": 5.0},
        {"category": "Garden", "events": 1, "users": 1, "purchases": 1, "revenue": 5.0},
    ]
    assert [r["category"] for r in store.category_activity(top=1).to_pylist()] == ["Home"]
    later = store.category_activity("2024-03-02T00:00:00Z").to_pylist()
    assert [(r["category"], r["revenue"]) for r in later] == [("Garden", 5.0), ("Home", -5.0)], "ties by name"


def test_item_activity_sums_each_items_events_per_type(store: Store, settings: Settings, tmp_path: Path) -> None:
    _insight_shop(store, settings, tmp_path)
    assert store.item_activity(["i1", "unknown"]).to_pylist() == [
        {"item_id": "i1", "type": "purchase", "events": 1, "users": 1, "quantity": 2.0, "value": 10.0},
        {"item_id": "i1", "type": "return", "events": 1, "users": 1, "quantity": 1.0, "value": 5.0},
        {"item_id": "i1", "type": "view", "events": 2, "users": 2, "quantity": 2.0, "value": 0.0},
    ]
    assert store.item_activity([]).num_rows == 0


def test_the_import_log_lists_the_newest_imports_first(store: Store, settings: Settings, tmp_path: Path) -> None:
    _insight_shop(store, settings, tmp_path)
    log = store.import_log().to_pylist()
    assert [(r["kind"], r["received"], r["written"]) for r in log] == [("events", 6, 6), ("items", 3, 3)]
    assert log[0]["batch_id"] > log[1]["batch_id"] and log[0]["imported_at"].tzinfo is not None
    assert len(store.import_log(1)) == 1
