"""Remembered keys and ids: exactly-once appends and the SQL path's dense ids, without reading the tables.

The exactly-once and id tests run against a store that remembers and one that does not: both must
give the same tables, so the in-memory shortcut changes the cost of a commit and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shopsense.store import open_store
from shopsense.store.duckdb import DuckDBStore
from shopsense.store.remembered import DenseIds, KeyIndex

TS = pa.timestamp("us", tz="UTC")


def _events(keys: list[tuple[int, int]], users: list[str], items: list[str], context: str | None = None) -> pa.Table:
    n = len(keys)
    return pa.table(
        {
            "key_hi": pa.array([k[0] for k in keys], pa.uint64()),
            "key_lo": pa.array([k[1] for k in keys], pa.uint64()),
            "event_id": [f"e{k[0]}-{k[1]}" for k in keys],
            "user_id": users,
            "item_id": items,
            "type": ["view"] * n,
            "timestamp": pa.array([1_700_000_000_000_000 + i for i in range(n)], TS),
            "channel": pa.array([None] * n, pa.string()),
            "session_id": pa.array([None] * n, pa.string()),
            "quantity": [1.0] * n,
            "value": pa.array([None] * n, pa.float64()),
            "rating": pa.array([None] * n, pa.float64()),
            "context": pa.array([context] * n, pa.string()),
        }
    )


def _append(store: DuckDBStore, table: pa.Table) -> tuple[int, int]:
    users = pa.array(sorted(set(table.column("user_id").to_pylist())), pa.string())
    items = pa.array(sorted(set(table.column("item_id").to_pylist())), pa.string())
    result = store.append_events(table, users, items, "api")
    return result.written, result.already_stored


def _import(store: DuckDBStore, table: pa.Table) -> int:
    """The file importer's path: a record-batch stream."""
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))
    users = pa.array(sorted(set(table.column("user_id").to_pylist())), pa.string())
    items = pa.array(sorted(set(table.column("item_id").to_pylist())), pa.string())
    return store.append_events(reader, users, items, "file").written


def _tables(store: DuckDBStore) -> dict[str, list[tuple[object, ...]]]:
    con = store._con
    return {
        "users": con.execute("SELECT user_idx, user_id FROM users ORDER BY user_idx").fetchall(),
        "items": con.execute("SELECT item_idx, item_id FROM items ORDER BY item_idx").fetchall(),
        "events": con.execute(
            "SELECT key_hi, key_lo, user_idx, item_idx, batch_id FROM events ORDER BY key_hi, key_lo"
        ).fetchall(),
        "imports": con.execute("SELECT batch_id, received, written, already_stored FROM imports").fetchall(),
    }


@pytest.fixture(params=["remembered", "scanned"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    assert isinstance(opened, DuckDBStore)
    _import(opened, _events([(1, 1), (2, 2)], ["u0", "u1"], ["i0", "i1"]))  # stored before the server started
    if request.param == "remembered":
        opened.remember_keys()
    yield opened
    opened.close()


def test_an_event_stored_before_the_start_is_not_stored_again(store: DuckDBStore) -> None:
    assert _append(store, _events([(1, 1), (3, 3)], ["u0", "u2"], ["i0", "i2"])) == (1, 1)
    assert store.summary().events == 3


def test_an_event_sent_in_two_commits_is_stored_once(store: DuckDBStore) -> None:
    assert _append(store, _events([(5, 5)], ["u0"], ["i0"])) == (1, 0)
    assert _append(store, _events([(5, 5), (6, 6)], ["u0", "u1"], ["i0", "i1"])) == (1, 1)
    assert store.summary().events == 4


def test_a_key_sharing_its_high_half_with_a_stored_one_is_a_new_event(store: DuckDBStore) -> None:
    assert _append(store, _events([(1, 99), (2, 2)], ["u0", "u1"], ["i0", "i1"])) == (1, 1)
    assert (1, 99) in {row[:2] for row in _tables(store)["events"]}


def test_an_import_stream_after_the_start_is_known_to_later_commits(store: DuckDBStore) -> None:
    assert _import(store, _events([(7, 7)], ["u3"], ["i3"])) == 1
    assert _append(store, _events([(7, 7), (8, 8)], ["u3", "u3"], ["i3", "i3"])) == (1, 1)
    assert store.summary().users == 3, "u3 came with the import; the commit did not add it twice"


def test_an_erased_user_comes_back_as_new_with_a_resent_event(store: DuckDBStore) -> None:
    store.erase_user("u1")
    assert _append(store, _events([(2, 2)], ["u1"], ["i1"])) == (1, 0), "the erased event is stored again"
    users = dict((user, idx) for idx, user in _tables(store)["users"])
    assert set(users) == {"u0", "u1"} and users["u1"] == 1, "the next index after the largest stored"


def test_a_failed_commit_leaves_no_id_behind(store: DuckDBStore) -> None:
    with pytest.raises(Exception, match=r"(?i)json"):
        _append(store, _events([(9, 9)], ["u9"], ["i9"], context="not json"))
    assert store.summary().users == 2
    assert _append(store, _events([(9, 9)], ["u9"], ["i9"])) == (1, 0)
    assert ("u9" in {user for _, user in _tables(store)["users"]}) and store.summary().users == 3


def _upsert_item(store: DuckDBStore, item_id: str, attributes: str | None = None) -> None:
    items = pa.table(
        {
            "item_id": [item_id],
            **{name: pa.array([None], pa.string()) for name in ("title", "description")},
            "category": pa.array([None], pa.list_(pa.string())),
            "brand": pa.array([None], pa.string()),
            "price": pa.array([None], pa.float64()),
            "currency": pa.array([None], pa.string()),
            "available": pa.array([True], pa.bool_()),
            "stock": pa.array([None], pa.int64()),
            "attributes": pa.array([attributes], pa.string()),
            "first_seen": pa.array([None], TS),
        }
    )
    store.upsert_items(pa.RecordBatchReader.from_batches(items.schema, items.to_batches()), "api")


def test_a_failed_upsert_leaves_no_id_behind(store: DuckDBStore) -> None:
    with pytest.raises(Exception, match=r"(?i)json"):
        _upsert_item(store, "i8", attributes="not json")
    assert _append(store, _events([(11, 11)], ["u0"], ["i8"])) == (1, 0)
    assert [item for _, item in _tables(store)["items"]].count("i8") == 1
    assert "i8" in store.scan_events().column("item_id").to_pylist(), "the event names a stored item"


def test_upserts_and_impressions_add_ids_the_next_commit_reuses(store: DuckDBStore) -> None:
    _upsert_item(store, "i7")
    shown = pa.table(
        {
            "recommendation_id": ["r1"],
            "user_id": ["u7"],
            "item_id": ["i7"],
            "position": pa.array([1], pa.int32()),
            "model_version": ["v1"],
            "timestamp": pa.array([1_700_000_000_000_000], TS),
        }
    )
    store.append_impressions(shown)
    assert _append(store, _events([(10, 10)], ["u7"], ["i7"])) == (1, 0)
    tables = _tables(store)
    assert [user for _, user in tables["users"]].count("u7") == 1
    assert [item for _, item in tables["items"]].count("i7") == 1


def test_remembering_changes_no_stored_row(tmp_path: Path) -> None:
    """The same writes through both paths give identical tables: dense ids, batch ids, import log."""

    def run(remember: bool) -> dict[str, list[tuple[object, ...]]]:
        store = open_store(f"duckdb:///{tmp_path / f'{remember}.duckdb'}")
        assert isinstance(store, DuckDBStore)
        _import(store, _events([(1, 1), (2, 2)], ["b", "a"], ["y", "x"]))
        if remember:
            store.remember_keys()
        _append(store, _events([(3, 3), (2, 2)], ["d", "c"], ["x", "z"]))
        with pytest.raises(Exception, match=r"(?i)json"):  # rolled back: no batch id, no user taken
            _append(store, _events([(8, 8)], ["h"], ["x"], context="not json"))
        store.erase_user("a")
        _append(store, _events([(4, 4), (5, 5), (4, 9)], ["e", "a", "d"], ["w", "y", "v"]))
        _import(store, _events([(6, 6)], ["f"], ["y"]))
        _append(store, _events([(6, 6), (7, 7)], ["f", "g"], ["y", "u"]))
        tables = _tables(store)
        store.close()
        return tables

    assert run(remember=True) == run(remember=False)


def test_key_index_never_misses_a_stored_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shopsense.store.remembered.TAIL_MIN", 8)  # merge often
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 2**64 - 1, 50, dtype=np.uint64)
    index = KeyIndex(stored)
    seen = set(stored.tolist())
    for _ in range(20):
        batch = rng.integers(0, 2**64 - 1, int(rng.integers(0, 12)), dtype=np.uint64)
        index.add(batch)
        seen.update(batch.tolist())
        known = rng.choice(np.array(sorted(seen), np.uint64), 20)
        probe = np.concatenate([known, rng.integers(0, 2**64 - 1, 20, dtype=np.uint64)])
        assert index.maybe_stored(probe).tolist() == [int(p) in seen for p in probe]


def test_dense_ids_number_new_ids_in_sorted_order_after_the_largest() -> None:
    ids = DenseIds(["a", "b"], [0, 5])
    indices, pending = ids.resolve(["c", "b", "z", "c"])
    assert pending == {"c": 6, "z": 7}
    assert indices.tolist() == [6, 5, 7, 6]
    ids.add(pending)
    again, none = ids.resolve(["c"])
    assert again.tolist() == [6] and none == {} and ids.next == 8


def test_dense_ids_count_the_bytes_of_their_strings() -> None:
    """The soak benchmark sets RSS against the server's count of what it holds: each new id must add its string."""
    ids = DenseIds([], [])
    empty = ids.nbytes
    long_ids = {f"a-rather-long-user-id-{n:06d}": n for n in range(2000)}
    ids.add(long_ids)
    assert ids.nbytes - empty > sum(map(len, long_ids))
    grown = ids.nbytes
    ids.add(dict(list(long_ids.items())[:10]))
    assert ids.nbytes == grown, "an id added again is not counted twice"


def test_the_store_counts_what_its_writer_remembers(tmp_path: Path) -> None:
    store = DuckDBStore(f"duckdb:///{tmp_path / 'm.duckdb'}", str(tmp_path / "m.duckdb"))
    try:
        store.remember_keys()
        users = [f"user-{n}" for n in range(500)]
        _append(store, _events([(n + 10, n) for n in range(500)], users, ["i0"] * 500))
        remembered = store._memory
        assert remembered is not None and remembered.users.nbytes > sum(map(len, users))
        assert store.memory_held() >= remembered.nbytes > 0
    finally:
        store.close()
