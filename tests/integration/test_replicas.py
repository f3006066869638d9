"""Several API replicas on one PostgreSQL database: the feed window, and real `shopsense serve` processes
that see each other's events and erasures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pytest

from shopsense.domain import RecordKind
from shopsense.errors import StoreError
from shopsense.services.data import DataService
from shopsense.services.live import LiveHistories
from shopsense.services.sync import ReplicaSync
from shopsense.settings import load_settings
from shopsense.store import Store, open_store
from shopsense.store.base import EVENT_COLUMNS, FeedStart, ReplicaFeed
from tests.conftest import load
from tests.servers import ServerProcess

SHOPSENSE = [sys.executable, "-m", "shopsense"]
T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
SYNCED_WITHIN_S = 1.0

pytestmark = pytest.mark.integration


# -- the feed window ------------------------------------------------------------------------------


def _events(keys: list[int], user: str, item: str = "i1") -> pa.Table:
    n = len(keys)
    columns = {
        "key_hi": pa.array([7] * n, pa.uint64()),
        "key_lo": pa.array(keys, pa.uint64()),
        "event_id": pa.array([f"e{k}" for k in keys]),
        "user_id": pa.array([user] * n),
        "item_id": pa.array([item] * n),
        "type": pa.array(["view"] * n),
        "timestamp": pa.array([T0 + timedelta(seconds=k) for k in keys], TS),
        "channel": pa.array(["web"] * n),
        "session_id": pa.array([None] * n, pa.string()),
        "quantity": pa.array([1.0] * n),
        "value": pa.array([None] * n, pa.float64()),
        "rating": pa.array([None] * n, pa.float64()),
        "context": pa.array([None] * n, pa.string()),
    }
    return pa.table([columns[c] for c in EVENT_COLUMNS], names=list(EVENT_COLUMNS))


def _write(store: Store, table: pa.Table) -> int:
    """Append and return the writing transaction's id."""
    users, items = pa.array(sorted(set(table["user_id"].to_pylist()))), pa.array(["i1"])
    txid = store.append_events(table, users, items, "test").txid
    assert txid is not None
    return txid


@pytest.fixture
def stores(postgres_url: str) -> Iterator[tuple[Store, Store]]:
    """Two handles on one database: a replica's feed reader and another replica's writer."""
    reader, writer = open_store(postgres_url), open_store(postgres_url)
    try:
        yield reader, writer
    finally:
        reader.close()
        writer.close()


@pytest.fixture
def running(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A transaction that stays running (it has an xid) until the test commits it."""
    with psycopg.connect(postgres_url) as conn:
        conn.execute("SELECT pg_current_xact_id()")
        yield conn


def _xid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_xact_id()::TEXT::BIGINT").fetchone()
    assert row is not None
    return int(row[0])


def _feed(store: Store) -> ReplicaFeed:
    assert isinstance(store, ReplicaFeed)
    return store


def _sync(reader: Store, start: FeedStart) -> tuple[ReplicaSync, LiveHistories]:
    live = LiveHistories(start.events)
    return ReplicaSync(lambda: reader, start, live, live.erase, lambda items: None, every=60), live


def test_a_running_transaction_holds_back_only_its_own_writes(
    stores: tuple[Store, Store], running: psycopg.Connection[Any], postgres_url: str
) -> None:
    reader, writer = stores
    cursor = _feed(reader).feed_start().cursor
    held = _xid(running)  # a long transaction (an import, an idle session) begun before the writes below
    slow = open_store(postgres_url)
    try:
        with slow.transaction():
            slow.append_events(_events([5], "u5", "i5"), pa.array(["u5"]), pa.array(["i5"]), "test")  # no row shared
            _write(writer, _events([1], "u1"))  # commits while both transactions still run
            window = _feed(reader).changes_since(cursor)
            assert window.events["user_id"].to_pylist() == ["u1"], "an older running transaction holds nothing back"
            assert held in window.next_cursor.running
        later = _feed(reader).changes_since(window.next_cursor)
        assert later.events["user_id"].to_pylist() == ["u5"], "read once it has committed, and only then"
    finally:
        slow.close()
    running.commit()
    assert _feed(reader).changes_since(later.next_cursor).events.num_rows == 0, "nothing is read twice"


def test_changed_items_come_with_their_current_availability(stores: tuple[Store, Store]) -> None:
    reader, writer = stores
    cursor = _feed(reader).feed_start().cursor
    items = pa.table({"item_id": ["i1", "i2"], "available": [False, True], "stock": [0, 4]})
    writer.upsert_items(items.to_reader(), "test")
    window = _feed(reader).changes_since(cursor)
    assert sorted(window.items.to_pylist(), key=lambda r: r["item_id"]) == items.to_pylist()
    assert _feed(reader).changes_since(window.next_cursor).items.num_rows == 0


def test_events_and_erasures_come_in_commit_order_once(stores: tuple[Store, Store]) -> None:
    reader, writer = stores
    sync, live = _sync(reader, _feed(reader).feed_start())
    _write(writer, _events([1, 2], "u1"))
    sync.poll()
    assert live.count("u1") == 2
    writer.erase_user("u1")
    _write(writer, _events([3], "u1"))  # the user comes back after the erasure
    _write(writer, _events([4], "u2"))
    sync.poll()
    sync.poll()
    assert live.count("u1") == 1 and live.count("u2") == 1
    assert live.history("u1")["timestamp"].to_pylist() == [T0 + timedelta(seconds=3)]


def test_an_erasure_made_here_before_the_window_is_read_still_empties_memory(stores: tuple[Store, Store]) -> None:
    reader, writer = stores
    sync, live = _sync(reader, _feed(reader).feed_start())
    _write(writer, _events([1, 2], "u1"))  # another replica's events, not applied here yet
    writer.erase_user("u1")  # ... then this replica erases the user and applies it at once
    sync.local(_feed(writer).last_txid, lambda: live.erase("u1"))
    sync.poll()  # the window holds both: the events must not come back
    assert live.count("u1") == 0


def test_events_written_by_an_older_transaction_after_an_erasure_survive_it(
    stores: tuple[Store, Store], postgres_url: str
) -> None:
    reader, writer = stores
    _write(writer, _events([1], "x"))
    sync, live = _sync(reader, _feed(reader).feed_start())
    late = open_store(postgres_url)
    try:
        with late.transaction():  # begins (takes its transaction id) before the erasure ...
            late.append_events(_events([2], "other", "i2"), pa.array(["other"]), pa.array(["i2"]), "test")
            writer.erase_user("x")  # ... which commits first, with a higher id
            late.append_events(_events([3], "x"), pa.array(["x"]), pa.array(["i1"]), "test")
        assert _feed(late).last_txid is not None and _feed(late).last_txid < (_feed(writer).last_txid or 0)
    finally:
        late.close()
    sync.poll()
    assert live.count("x") == 1, "x came back after the erasure: that event is stored, so it stays"
    assert live.count("other") == 1


def test_own_writes_are_applied_once_whoever_sees_them_first(stores: tuple[Store, Store]) -> None:
    reader, writer = stores
    sync, live = _sync(reader, _feed(reader).feed_start())
    first, second = _events([1], "u1"), _events([2], "u1")
    txid = _write(writer, first)
    sync.local(txid, lambda: live.append(first))  # the writer thread got there first
    sync.poll()
    txid = _write(writer, second)
    sync.poll()  # the feed got there first ...
    sync.local(txid, lambda: live.append(second))  # ... so the writer thread skips it
    sync.poll()
    assert live.count("u1") == 2


def test_the_startup_snapshot_is_not_applied_again(
    stores: tuple[Store, Store], running: psycopg.Connection[Any]
) -> None:
    reader, writer = stores
    _xid(running)  # a transaction still running when the snapshot is taken
    _write(writer, _events([1, 2], "u1"))
    writer.erase_user("u2")
    _write(writer, _events([3], "u2"))  # after the erasure: re-applying it would drop this event
    start = _feed(reader).feed_start()
    assert start.events.num_rows == 3
    running.commit()
    sync, live = _sync(reader, start)
    _write(writer, _events([4], "u3"))
    sync.poll()
    assert live.count("u3") == 1  # the window reached past the snapshot
    assert live.count("u1") == 2 and live.count("u2") == 1


def test_an_erasure_leaves_a_tombstone(stores: tuple[Store, Store]) -> None:
    reader, writer = stores
    cursor = _feed(reader).feed_start().cursor
    _write(writer, _events([1], "u1"))
    writer.erase_user("u1")
    txid = _feed(writer).last_txid
    window = _feed(reader).changes_since(cursor)
    assert window.events.num_rows == 0  # erased with the user
    assert window.erasures.to_pylist() == [{"user_id": "u1", "txid": txid}]


def test_the_sync_thread_outlives_database_errors(stores: tuple[Store, Store]) -> None:
    reader, writer = stores
    start = _feed(reader).feed_start()
    live = LiveHistories(start.events)
    failures = iter([StoreError("the database system is starting up")] * 3)

    def open_feed() -> Store:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return reader

    sync = ReplicaSync(open_feed, start, live, live.erase, lambda items: None, every=0.01)
    sync.start()
    try:
        _write(writer, _events([1], "u1"))
        assert _within(SYNCED_WITHIN_S, lambda: live.count("u1") == 1)
    finally:
        sync.close()


# -- real servers ---------------------------------------------------------------------------------


@pytest.fixture
def shared(trained: Path, postgres_url: str, tmp_path: Path) -> tuple[dict[str, str], str]:
    """One data directory with the trained bundle, the shop imported into PostgreSQL, and an admin key
    made by the CLI over the same store: the environment every replica runs with, and the key."""
    data = tmp_path / "data"
    shutil.copytree(trained / "models", data / "models")
    service = DataService(load_settings(None, data_dir=data, store_url=postgres_url))
    try:
        load(service, trained.parent / "items.parquet", RecordKind.ITEMS)
        load(service, trained.parent / "events.parquet")
    finally:
        service.close()
    env = {**os.environ, "SHOPSENSE_DATA_DIR": str(data), "SHOPSENSE_STORE_URL": postgres_url}
    made = subprocess.run([*SHOPSENSE, "keys", "create", "replicas", "--scope", "admin"], env=env, capture_output=True)
    assert made.returncode == 0, made.stderr.decode()
    return env, made.stdout.decode().split()[-1]


@pytest.fixture
def pair(shared: tuple[dict[str, str], str]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    env, key = shared
    replicas = [ServerProcess(env).launch(), ServerProcess(env).launch()]
    try:
        a, b = (r.wait_up() for r in replicas)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=a.url, headers=headers) as ca, httpx.Client(base_url=b.url, headers=headers) as cb:
            yield ca, cb
    finally:
        for replica in replicas:
            replica.stop()


def _items(client: httpx.Client, user: str) -> list[str]:
    answer = client.get("/v1/recommendations", params={"user_id": user, "k": 10})
    assert answer.status_code == 200, answer.text
    return [item["item_id"] for item in answer.json()["items"]]


def _within(seconds: float, check: Callable[[], bool]) -> bool:
    """Whether ``check`` holds within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _post(client: httpx.Client, user: str, items: list[str], prefix: str) -> None:
    now = datetime.now(UTC).isoformat()
    batch = [
        {"event_id": f"{prefix}-{n}", "user_id": user, "item_id": item, "type": "purchase", "timestamp": now}
        for n, item in enumerate(items)
    ]
    posted = client.post("/v1/events", json=batch)
    assert posted.status_code == 200 and posted.json()["accepted"] == len(items), posted.text


def test_an_event_on_one_replica_reaches_the_others_answers_within_a_second(
    pair: tuple[httpx.Client, httpx.Client], postgres_url: str
) -> None:
    a, b = pair
    cold = _items(b, "replica-newcomer")
    _post(a, "replica-newcomer", cold[:3], "ack")
    with psycopg.connect(postgres_url) as conn:  # acknowledged means committed
        row = conn.execute("SELECT count(*) FROM events WHERE event_id LIKE 'ack-%'").fetchone()
    assert row == (3,)
    assert _within(SYNCED_WITHIN_S, lambda: _items(b, "replica-newcomer") != cold)


def test_an_erasure_on_one_replica_empties_the_others_within_a_second(
    pair: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = pair
    user = "user-2"
    _post(b, user, ["item-1"], "before")  # B's memory holds the user's latest event, not only the startup's
    assert _within(SYNCED_WITHIN_S, lambda: _items(a, user) == _items(b, user))
    cold = _items(b, "never-seen")
    assert _items(b, user) != cold
    assert a.delete(f"/v1/users/{user}").status_code in (200, 204)
    assert _within(SYNCED_WITHIN_S, lambda: _items(b, user) == cold)
    history = b.get(f"/v1/users/{user}/history")
    assert history.status_code == 404 or not history.json()["events"]


def test_an_item_taken_off_sale_on_one_replica_leaves_the_others_answers_within_a_second(
    pair: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = pair
    user = "user-4"
    shown = _items(b, user)
    gone = shown[0]
    assert a.put("/v1/items", json=[{"item_id": gone, "available": False}]).status_code == 200
    assert _within(SYNCED_WITHIN_S, lambda: gone not in _items(b, user))


def test_several_workers_share_one_port_on_postgresql(shared: tuple[dict[str, str], str]) -> None:
    env, key = shared
    server = ServerProcess(env, "--workers", "2").launch()
    try:
        server.wait_up()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(8):
                assert len(_items(client, "user-3")) == 10
    finally:
        server.stop()


def test_several_workers_on_the_embedded_store_are_refused(tmp_path: Path) -> None:
    env = {**os.environ, "SHOPSENSE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}  # no wrapping
    env.pop("SHOPSENSE_STORE_URL", None)
    done = subprocess.run([*SHOPSENSE, "serve", "--workers", "2"], env=env, capture_output=True, timeout=60)
    message = done.stderr.decode()
    assert done.returncode == 2, message
    assert "embedded store admits one process" in message and "postgresql://" in message
    assert len(message.strip().splitlines()) == 1
