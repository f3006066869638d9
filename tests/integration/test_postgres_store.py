"""What the PostgreSQL store adds beyond the shared store contract (tests/contracts/test_store.py):
the same Arrow schemas as the embedded store, JSON merged as DuckDB merges it, concurrent writers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import pyarrow as pa
import pytest

from shopsense.errors import StoreError, StoreUnavailable
from shopsense.store import Store, migrations, open_store
from shopsense.store.base import EVENT_COLUMNS

SHOPSENSE = [sys.executable, "-m", "shopsense"]

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


@pytest.fixture
def pair(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """An embedded store and a PostgreSQL store, both empty."""
    embedded = open_store(f"duckdb:///{tmp_path / 'e.duckdb'}")
    server = open_store(postgres_url)
    try:
        yield embedded, server
    finally:
        embedded.close()
        server.close()


def _events(keys: list[int], users: list[str], item: str = "i1") -> pa.Table:
    n = len(keys)
    columns = {
        "key_hi": pa.array([2**64 - 1 - k for k in keys], pa.uint64()),
        "key_lo": pa.array(keys, pa.uint64()),
        "event_id": pa.array([f"e{k}" for k in keys]),
        "user_id": pa.array(users),
        "item_id": pa.array([item] * n),
        "type": pa.array(["purchase"] * n),
        "timestamp": pa.array([T0 + timedelta(seconds=k) for k in keys], TS),
        "channel": pa.array(["web"] * n),
        "session_id": pa.array([None] * n, pa.string()),
        "quantity": pa.array([1.0] * n),
        "value": pa.array([2.5] * n),
        "rating": pa.array([None] * n, pa.float64()),
        "context": pa.array(['{"a": {"b": 1}}'] * n),
    }
    return pa.table([columns[c] for c in EVENT_COLUMNS], names=list(EVENT_COLUMNS))


def _write(store: Store, table: pa.Table) -> None:
    users = pa.array(sorted(set(table.column("user_id").to_pylist())))
    items = pa.array(sorted(set(table.column("item_id").to_pylist())))
    store.append_events(table, users, items, "test")


def test_reads_have_the_embedded_stores_schemas(pair: tuple[Store, Store]) -> None:
    for store in pair:
        _write(store, _events([1, 2], ["u1", "u2"]))
        store.append_impressions(
            pa.table(
                {
                    "recommendation_id": ["r1"],
                    "user_id": ["u1"],
                    "item_id": ["i1"],
                    "position": pa.array([1], pa.int32()),
                    "model_version": ["m1"],
                    "timestamp": pa.array([T0], TS),
                }
            )
        )
        store.add_assignments("c", pa.table({"user_id": ["u1"], "variant": ["a"], "assigned_at": pa.array([T0], TS)}))
    embedded, server = pair
    reads: dict[str, Callable[[Store], pa.Table]] = {
        "scan_events": lambda s: s.scan_events(),
        "scan_items": lambda s: s.scan_items(),
        "impression_report": lambda s: s.impression_report(1.0, ["view"], ["purchase"]),
        "assignments": lambda s: s.assignments("c"),
        "nothing assigned": lambda s: s.assignments("none"),
    }
    for name, read in reads.items():
        want, got = read(embedded), read(server)
        assert got.schema == want.schema, name
        assert got.to_pylist() == want.to_pylist(), name


def test_attributes_merge_as_rfc_7386_like_the_embedded_store(pair: tuple[Store, Store]) -> None:
    patches = ['{"a": {"b": 1, "c": 2}, "d": 1, "e": [1]}', '{"a": {"b": null, "x": {"y": 1}}, "d": null}', '{"e": 3}']
    records = []
    for store in pair:
        for patch in patches:
            users = pa.table({"user_id": ["u1"], "attributes": [patch], "first_seen": pa.array([None], TS)})
            store.upsert_users(pa.RecordBatchReader.from_batches(users.schema, users.to_batches()), "t")
        record = store.user_record("u1")
        assert record is not None
        records.append(json.loads(record["attributes"]))
    assert records[0] == records[1] == {"a": {"c": 2, "x": {"y": 1}}, "e": 3}


def test_concurrent_writers_store_each_event_and_id_once(postgres_url: str) -> None:
    open_store(postgres_url).close()  # the schema, made once
    keys = list(range(200))
    results: list[object] = []
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        store = open_store(postgres_url)
        try:
            for start in range(0, 200, 20):  # overlapping slices, same users, same items, in both orders
                chunk = keys[(start + offset) % 200 : (start + offset) % 200 + 20][:: -1 if offset % 20 else 1]
                results.append(
                    store.append_events(
                        _events(chunk, [f"u{k % 7}" for k in chunk]),
                        pa.array([f"u{i}" for i in range(7)]),
                        pa.array(["i1"]),
                        "t",
                    ).batch_id
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(n * 10,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(set(results)) == len(results), "batch ids are never given out twice"
    store = open_store(postgres_url)
    try:
        summary = store.summary()
        assert (summary.events, summary.users, summary.items) == (200, 7, 1)
    finally:
        store.close()


def test_small_and_large_writes_store_the_same_rows_once(pair: tuple[Store, Store]) -> None:
    """A small write goes as array parameters, a large one COPY-staged: both skip stored keys and store what
    the embedded store stores (times to the microsecond, JSON, NULLs), whichever way an event came in."""
    large = 6_000  # above the store's array limit
    writes = [list(range(10)), list(range(large)), list(range(large - 5, large + 5))]
    written = {}
    for store in pair:
        written[type(store).__name__] = [
            store.append_events(
                _events(keys, [f"u{k % 50}" for k in keys]),
                pa.array([f"u{k}" for k in range(50)]),
                pa.array(["i1"]),
                "t",
            ).written
            for keys in writes
        ]
    assert list(written.values()) == [[10, large - 10, 5]] * 2
    embedded, server = pair
    assert server.scan_events().to_pylist() == embedded.scan_events().to_pylist()


def test_open_errors_are_store_errors_and_a_refused_version_lets_go(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        open_store(postgres_url.rsplit("/", 1)[0] + "/no_such_db")
    with pytest.raises(StoreError, match="no database named"):
        open_store(postgres_url.rsplit("/", 1)[0])
    open_store(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        newer = migrations.latest() + 1
        conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", [str(newer)])
        conn.execute("DROP TABLE impressions")
        with pytest.raises(StoreError, match=f"schema version {newer}"):
            open_store(postgres_url)
        assert conn.execute("SELECT to_regclass('impressions')").fetchone() == (None,), "a newer schema is not altered"
        deadline, open_connections = time.monotonic() + 10, -1
        while open_connections and time.monotonic() < deadline:  # a closed backend leaves pg_stat_activity soon after
            (open_connections,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone() or (0,)
            time.sleep(0.05 if open_connections else 0)
    assert open_connections == 0


def test_a_database_with_other_tables_is_not_taken_over(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
        with pytest.raises(StoreError, match="not a shopsense store"):
            open_store(postgres_url)
        assert conn.execute("SELECT to_regclass('meta')").fetchone() == (None,), "nothing was created"


def test_concurrent_upserts_of_the_same_users_in_opposite_orders_all_land(postgres_url: str) -> None:
    open_store(postgres_url).close()
    ids = [f"u{n}" for n in range(300)]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        store = open_store(postgres_url)
        try:
            for _ in range(5):
                order = ids if n % 2 else ids[::-1]
                users = pa.table(
                    {
                        "user_id": order,
                        "attributes": [json.dumps({f"w{n}": True}) for _ in order],
                        "first_seen": pa.array([T0 - timedelta(days=n)] * len(order), TS),
                    }
                )
                store.upsert_users(pa.RecordBatchReader.from_batches(users.schema, users.to_batches()), "t")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    store = open_store(postgres_url)
    try:
        record = store.user_record("u7")
        assert record is not None and json.loads(record["attributes"]) == {f"w{n}": True for n in range(4)}
        assert record["first_seen"] == T0 - timedelta(days=3)
        assert store.summary().users == 300
    finally:
        store.close()


def test_an_embedded_store_moves_to_postgresql_by_export_and_import(postgres_url: str, tmp_path: Path) -> None:
    """The documented move (docs/data.md, "Moving an embedded store to PostgreSQL"), through the CLI."""
    from typer.testing import CliRunner

    from shopsense.cli import app
    from tests.conftest import DATA

    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        return str(result.stdout)

    embedded = ["--data-dir", str(tmp_path / "embedded")]
    server = ["--data-dir", str(tmp_path / "server"), "--store-url", postgres_url]
    run(*embedded, "import", "dataset", "online-retail", str(DATA / "online_retail_sample.csv"))
    for kind in ("items", "users", "events"):
        run(*embedded, "export", kind, str(tmp_path / f"{kind}.parquet"))
    for kind in ("items", "users", "events"):
        run(*server, "import", kind, str(tmp_path / f"{kind}.parquet"))
    before, after = (json.loads(run(*where, "stats", "--json")) for where in (embedded, server))
    for field in ("users", "guest_users", "items", "events", "events_by_type", "net_quantity", "net_revenue"):
        assert after[field] == before[field], field
    again = json.loads(run(*server, "import", "events", str(tmp_path / "events.parquet"), "--json"))
    assert again["rows_written"] == 0 and again["already_stored"] == before["events"], "a second move adds nothing"


def test_an_event_written_during_an_erasure_is_kept_under_the_user_anew(postgres_url: str) -> None:
    eraser, writer = open_store(postgres_url), open_store(postgres_url)
    try:
        _write(eraser, _events([1, 2], ["u1", "u2"]))
        done = threading.Event()
        with eraser.transaction():
            assert eraser.erase_user("u1")["events"] == 1
            thread = threading.Thread(target=lambda: (_write(writer, _events([3], ["u1"])), done.set()))
            thread.start()
            time.sleep(0.5)
            assert not done.is_set(), "the write waits for the erasure to end"
        thread.join(timeout=30)
        assert done.is_set()
        events = writer.scan_events()
        assert sorted(events.column("user_id").to_pylist()) == ["u1", "u2"], "no orphaned event, none lost"
        assert writer.summary().events == events.num_rows == 2 and writer.user_record("u1") is not None
    finally:
        eraser.close()
        writer.close()


def test_the_cli_never_prints_the_password_of_a_store_url(postgres_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shopsense.cli import app

    with_password = postgres_url.replace("://shopsense@", "://shopsense:s3cret@")  # trust auth ignores it
    runner = CliRunner()
    for command in (["init"], ["stats"]):
        result = runner.invoke(app, ["--data-dir", str(tmp_path), "--store-url", with_password, *command])
        assert result.exit_code == 0, result.stderr
        assert "s3cret" not in result.stdout + result.stderr and "***" in result.stdout + result.stderr


def test_a_value_postgresql_refuses_is_a_store_error_and_writes_nothing(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        bad = _events([1], ["u\x00nul"])  # DuckDB stores a NUL; PostgreSQL text cannot
        with pytest.raises(StoreError, match="postgresql://"):
            _write(store, bad)
        assert store.summary().events == 0 and store.summary().users == 0
    finally:
        store.close()


def test_an_outdated_schema_is_refused_until_migrate_brings_it_up_keeping_its_data(
    postgres_url: str, tmp_path: Path
) -> None:
    first = migrations.migrations()[0]
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a database a shopsense of schema 1 made
        conn.execute(first.sql)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO users (user_id) VALUES ('u1')")
        conn.execute("INSERT INTO items (item_id) VALUES ('i1')")
        conn.execute(
            "INSERT INTO events (key_hi, key_lo, user_idx, item_idx, type, ts, quantity, batch_id) "
            "VALUES (1, 2, 0, 0, 'view', now(), 1, 1)"
        )
    with pytest.raises(StoreError, match="run `shopsense migrate`"):
        open_store(postgres_url)
    env = {**os.environ, "SHOPSENSE_STORE_URL": postgres_url, "SHOPSENSE_DATA_DIR": str(tmp_path)}
    done = subprocess.run([*SHOPSENSE, "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    applied = [f"{m.version:04d}_{m.name}" for m in migrations.migrations()[1:]]
    assert [line.split()[-1] for line in done.stderr.splitlines() if "applied migration" in line] == applied
    store = open_store(postgres_url)  # no longer refused, and the events written under schema 1 are there
    try:
        assert store.scan_events()["user_id"].to_pylist() == ["u1"]
    finally:
        store.close()
    again = subprocess.run([*SHOPSENSE, "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "applied migration" not in again.stderr, "a second migrate has nothing to do"


def test_migrate_store_copies_an_embedded_store_into_postgresql_and_again_adds_nothing(
    trained: Path, postgres_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    source = open_store(f"duckdb:///{data / 'shopsense.duckdb'}")
    try:
        users = source.scan_events()["user_id"].unique().to_pylist()[:3]
        source.save_campaign("spring", json.dumps({"name": "spring", "variants": ["a", "b"]}))
        stamp = pa.array([datetime(2026, 3, 1, tzinfo=UTC)] * 3, pa.timestamp("us", tz="UTC"))
        source.add_assignments("spring", pa.table({"user_id": users, "variant": ["a", "b", "a"], "assigned_at": stamp}))
        source.save_profiles(pa.table({"user_id": users, "recency_days": [1.0, 2.0, 3.0]}))
        before = source.summary(top=0)
    finally:
        source.close()
    env = {**os.environ, "SHOPSENSE_DATA_DIR": str(data)}
    command = [*SHOPSENSE, "migrate-store", postgres_url, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    assert first["written"]["events"] == before.events and first["written"]["assignments"] == 3
    target = open_store(postgres_url)
    try:
        after = target.summary(top=0)
        assert (after.users, after.items, after.events) == (before.users, before.items, before.events)
        assert after.net_revenue == pytest.approx(before.net_revenue)
        assert json.loads(target.campaigns()["spring"])["variants"] == ["a", "b"]
        assert sorted(target.assignments("spring")["user_id"].to_pylist()) == sorted(users)
        profiles = target.load_profiles()
        assert profiles is not None and profiles.sort_by("user_id")["recency_days"].to_pylist() == [1.0, 2.0, 3.0]
    finally:
        target.close()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["written"]["events"] == 0
    assert json.loads(again.stdout)["summary"]["events"] == before.events


def test_migrate_store_refuses_to_copy_a_store_into_itself(tmp_path: Path) -> None:
    env = {**os.environ, "SHOPSENSE_DATA_DIR": str(tmp_path)}
    url = f"duckdb:///{tmp_path / 'shopsense.duckdb'}"
    done = subprocess.run([*SHOPSENSE, "migrate-store", url], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "is the store being copied" in done.stderr


def test_reads_keep_nulls_empty_strings_lists_json_and_microseconds_as_the_embedded_store(
    pair: tuple[Store, Store],
) -> None:
    """The columnar reads parse PostgreSQL's CSV: every value that CSV or array syntax could blur comes back."""
    items = pa.table(
        {
            "item_id": ["i1", "i2", "i3"],
            "title": ["", None, 'quote " and, comma'],
            "description": ["two\nlines", "back\\slash", None],
            "category": pa.array(
                [[], None, ["a,b", 'x "y"', "back\\slash", "{braces}", "NULL"]], pa.list_(pa.string())
            ),
            "brand": ["", None, "b"],
            "price": pa.array([0.1, None, 1e-300], pa.float64()),
            "currency": ["EUR", None, ""],
            "available": pa.array([True, False, None], pa.bool_()),
            "stock": pa.array([None, 0, 2**40], pa.int64()),
            "attributes": ['{"é": "ü\\n"}', None, "{}"],
            "first_seen": pa.array([T0, None, T0 + timedelta(microseconds=7)], TS),
        }
    )
    events = _events([1, 2, 3], ["u1", "", "u 3"])
    events = events.set_column(EVENT_COLUMNS.index("session_id"), "session_id", pa.array(["", None, "s,1"]))
    events = events.set_column(
        EVENT_COLUMNS.index("timestamp"), "timestamp", pa.array([T0 + timedelta(microseconds=k) for k in (1, 2, 3)], TS)
    )
    for store in pair:
        store.upsert_items(pa.RecordBatchReader.from_batches(items.schema, items.to_batches()), "t")
        _write(store, events)
    embedded, server = pair
    for name, json_column in (("scan_events", "context"), ("scan_items", "attributes")):
        want, got = getattr(embedded, name)(), getattr(server, name)()
        assert got.schema == want.schema, name
        assert got.drop_columns(json_column).to_pylist() == want.drop_columns(json_column).to_pylist(), name
        parsed = [[None if v is None else json.loads(v) for v in t[json_column].to_pylist()] for t in (got, want)]
        assert parsed[0] == parsed[1], f"{name}.{json_column}: JSONB and DuckDB space JSON differently, same values"


def test_handles_share_one_pooled_connection_and_a_failed_transaction_is_not_passed_on(postgres_url: str) -> None:
    open_store(postgres_url).close()
    for _ in range(5):
        open_store(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        (connected,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone() or (0,)
    assert connected == 1, "six handles one after another borrowed one connection"
    failed = open_store(postgres_url)
    conn = failed._conn  # type: ignore[attr-defined]  # a handle abandoned inside a failed transaction
    conn.execute("BEGIN")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    failed.close()
    failed.close()  # a second close is harmless
    with pytest.raises(StoreError, match="closed"):
        failed.summary()
    after = open_store(postgres_url)
    try:
        _write(after, _events([2], ["u2"]))
        assert after.summary().events == 1, "the next handle got a working connection, outside any transaction"
    finally:
        after.close()


def test_a_handle_whose_connection_the_database_dropped_fails_once_then_works_again(
    postgres_url: str, postgres_admin_url: str
) -> None:
    store = open_store(postgres_url)
    try:
        store.append_events(_events([1], ["u1"]), pa.array(["u1"]), pa.array(["i1"]), "test")
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:  # as a database restart would
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [postgres_url.rsplit("/", 1)[1]],
            ).fetchone()
        assert ended is not None and ended[0] >= 1
        with pytest.raises(StoreUnavailable):
            store.scan_events()  # the call that meets the loss fails, naming the store, as one to retry
        pool = store._pool  # type: ignore[attr-defined]
        lend = pool.getconn
        refusals = iter([psycopg_pool.PoolTimeout("the database is still away")])

        def getconn() -> Any:
            refused = next(refusals, None)
            if refused is not None:
                raise refused
            return lend()

        pool.getconn = getconn
        try:
            with pytest.raises(StoreUnavailable):  # no connection to be had yet: the handle stays usable
                store.append_events(_events([2], ["u1"]), pa.array(["u1"]), pa.array(["i1"]), "test")
        finally:
            pool.getconn = lend
        store.append_events(_events([2], ["u1"]), pa.array(["u1"]), pa.array(["i1"]), "test")
        assert store.scan_events()["user_id"].to_pylist() == ["u1", "u1"]
    finally:
        store.close()
