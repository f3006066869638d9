"""The embedded store: URLs, atomic writes, persistence, exports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from shopsense.errors import StoreError
from shopsense.store import open_store
from shopsense.store.base import EVENT_COLUMNS, Store


def _events(n: int, start: int = 0) -> pa.Table:
    ids = [f"e{i}" for i in range(start, start + n)]
    return pa.table(
        {
            "key_hi": pa.array(range(start, start + n), pa.uint64()),
            "key_lo": pa.array([7] * n, pa.uint64()),
            "event_id": ids,
            "user_id": [f"u{i % 3}" for i in range(n)],
            "item_id": [f"i{i % 5}" for i in range(n)],
            "type": ["view"] * n,
            "timestamp": pa.array([1_700_000_000_000_000] * n, pa.timestamp("us", tz="UTC")),
            "channel": ["web"] * n,
            "session_id": [None] * n,
            "quantity": [1.0] * n,
            "value": pa.array([None] * n, pa.float64()),
            "rating": pa.array([None] * n, pa.float64()),
            "context": pa.array([None] * n, pa.string()),
        }
    )


def _append(store: Store, table: pa.Table) -> int:
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=4))
    users = pa.array(sorted(set(table.column("user_id").to_pylist())))
    items = pa.array(sorted(set(table.column("item_id").to_pylist())))
    return store.append_events(reader, users, items, "test").written


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"duckdb:///{tmp_path / 'db' / 's.duckdb'}")
    yield s
    s.close()


def test_event_columns_match_the_arrow_contract() -> None:
    assert tuple(_events(1).column_names) == EVENT_COLUMNS


def test_unknown_scheme_and_bad_url() -> None:
    with pytest.raises(StoreError, match="unknown scheme 'mysql'"):
        open_store("mysql:///x")
    with pytest.raises(StoreError, match="three slashes"):
        open_store("duckdb://x.duckdb")


def test_dense_ids_and_persistence(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 's.duckdb'}"
    store = open_store(url)
    assert _append(store, _events(10)) == 10
    store.close()
    reopened = open_store(url)
    assert reopened.summary().events == 10
    assert _append(reopened, _events(10)) == 0  # same keys
    assert _append(reopened, _events(4, start=10)) == 4
    summary = reopened.summary()
    assert (summary.users, summary.items, summary.events) == (3, 5, 14)
    reopened.close()


def test_a_failing_stream_leaves_nothing_behind(store: Store) -> None:
    table = _events(20)

    def batches() -> Iterator[pa.RecordBatch]:
        yield from table.to_batches(max_chunksize=5)[:2]
        raise RuntimeError("disk unplugged")

    reader = pa.RecordBatchReader.from_batches(table.schema, batches())
    with pytest.raises(Exception, match="disk unplugged"):
        store.append_events(reader, pa.array(["u0", "u1", "u2"]), pa.array(["i0"]), "broken")
    summary = store.summary()
    assert (summary.events, summary.users, summary.items, summary.imports) == (0, 0, 0, [])


def test_export_round_trip(store: Store, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from shopsense.domain import RecordKind

    _append(store, _events(6))
    assert store.export(RecordKind.EVENTS, tmp_path / "out" / "events.parquet") == 6
    table = pq.read_table(tmp_path / "out" / "events.parquet")
    assert sorted(table.column("event_id").to_pylist()) == sorted(f"e{i}" for i in range(6))
    assert not (tmp_path / "out" / "events.parquet.partial").exists()


def test_a_store_held_by_another_process_is_refused_with_a_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "held.duckdb"
    open_store(f"duckdb:///{path}").close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(StoreError, match="another process"):
            open_store(f"duckdb:///{path}")
    finally:
        holder.kill()
        holder.wait()
