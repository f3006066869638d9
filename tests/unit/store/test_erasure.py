"""Erasure in the embedded store leaves no byte of the user behind: not in the file, not in its log."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from shopsense.errors import StoreError
from shopsense.store import compaction, open_store
from shopsense.store import duckdb as duckdb_store
from shopsense.store.base import Store, erasure_hash
from shopsense.store.duckdb import DuckDBStore

GONE = "erase-me-7d1f0c9a-" + "q8Zt" * 12
"""Long and unlike anything else in the file, so finding its bytes means finding the user."""
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _events(users: list[str], start: int) -> pa.Table:
    n = len(users)
    return pa.table(
        {
            "key_hi": pa.array(range(start, start + n), pa.uint64()),
            "key_lo": pa.array([3] * n, pa.uint64()),
            "event_id": [f"e{i}" for i in range(start, start + n)],
            "user_id": users,
            "item_id": [f"i{i % 7}" for i in range(n)],
            "type": ["purchase"] * n,
            "timestamp": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
            "channel": ["web"] * n,
            "session_id": [f"s-{u}" for u in users],
            "quantity": [1.0] * n,
            "value": [2.5] * n,
            "rating": pa.array([None] * n, pa.float64()),
            "context": [json.dumps({"who": u}) for u in users],
        }
    )


def _filled(path: Path) -> Store:
    """A store holding the user everywhere a user can be: events, record, impressions, profile,
    campaign assignment, an audience job's rows; among many other users, written before and after."""
    store = open_store(f"duckdb:///{path}")
    others = [f"user-{i:05d}" for i in range(3000)]
    table = _events([*others[:1500], GONE, GONE, *others[1500:]], 0)
    store.append_events(table, pa.array(sorted({*others, GONE})), pa.array([f"i{i}" for i in range(7)]), "test")
    store.upsert_users(
        pa.table(
            {
                "user_id": [GONE, "user-00001"],
                "attributes": [json.dumps({"email": f"{GONE}@example.com"}), None],
                "first_seen": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
            }
        ).to_reader(),
        "test",
    )
    store.append_impressions(
        pa.table(
            {
                "recommendation_id": [f"r-{GONE}", "r-2"],
                "user_id": [GONE, "user-00002"],
                "item_id": ["i1", "i2"],
                "position": pa.array([1, 1], pa.int32()),
                "model_version": ["m1", "m1"],
                "timestamp": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
            }
        )
    )
    store.save_profiles(pa.table({"user_id": [GONE, *others], "score": [1.0] * (len(others) + 1)}))
    store.save_campaign("spring", "{}")
    store.add_assignments(
        "spring",
        pa.table(
            {
                "user_id": [GONE, "user-00003"],
                "variant": ["a", "b"],
                "assigned_at": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    store.create_job("audience-1", "audience")
    store.save_job_rows("audience-1", pa.table({"user_id": [GONE, "user-00004"]}))
    return store


def _holds_the_id(path: Path) -> list[str]:
    needle = GONE.encode()
    files = [path, path.with_name(f"{path.name}.wal")]
    return [f.name for f in files if f.exists() and needle in f.read_bytes()]


def test_the_ids_bytes_are_gone_from_the_file_and_its_log_after_erasure_and_close(tmp_path: Path) -> None:
    path = tmp_path / "shop.duckdb"
    store = _filled(path)
    store.close()
    assert _holds_the_id(path) == ["shop.duckdb"], "the test would see the id"
    store = open_store(f"duckdb:///{path}")
    counts = store.erase_user(GONE)
    assert {k: v for k, v in counts.items() if v} == {
        "events": 2,
        "impressions": 1,
        "users": 1,
        "assignments": 1,
        "profiles": 1,
        "job_rows": 1,
    }
    store.close()
    assert _holds_the_id(path) == []
    store = open_store(f"duckdb:///{path}")
    try:
        summary = store.summary()
        assert (summary.users, summary.events) == (3000, 3000), "everyone else is still there"
        assert set(store.tombstones()) == {erasure_hash(GONE)}
        assert store.assignments("spring").column("user_id").to_pylist() == ["user-00003"]
        rows = store.job_rows("audience-1")
        assert rows is not None and rows.column("user_id").to_pylist() == ["user-00004"]
    finally:
        store.close()
    assert _holds_the_id(path) == []


def test_a_process_that_ends_before_rewriting_the_file_leaves_it_to_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "shop.duckdb"
    store = _filled(path)
    store.erase_user(GONE)
    assert isinstance(store, DuckDBStore)
    store._con.close()  # the process died: no rewrite at close
    assert _holds_the_id(path), "freed blocks still hold the id"
    reopened = open_store(f"duckdb:///{path}")
    assert _holds_the_id(path) == [], "rewritten when opened"
    assert reopened.summary().events == 3000
    reopened.close()


def test_a_store_without_erasures_is_not_rewritten_at_close(tmp_path: Path) -> None:
    path = tmp_path / "shop.duckdb"
    store = _filled(path)
    store.close()
    before = path.stat().st_ino
    store = open_store(f"duckdb:///{path}")
    store.erase_user("nobody-known")  # a tombstone only: nothing was deleted
    store.close()
    assert path.stat().st_ino == before


def _in_another_process(path: Path, sql: str = "SELECT 1") -> bool:
    """Whether another process can open the file now (DuckDB's lock is per process) and run ``sql``."""
    code = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); con.execute(sys.argv[2]); con.close()"
    return subprocess.run([sys.executable, "-c", code, str(path), sql], capture_output=True).returncode == 0


def test_the_file_stays_locked_until_the_fresh_one_has_replaced_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shop.duckdb"
    store = _filled(path)
    store.erase_user(GONE)
    seen: list[bool] = []
    replace = os.replace

    def watched(src: Any, dst: Any) -> None:
        seen.append(_in_another_process(path))  # a commit made now would be lost to the rename
        replace(src, dst)
        seen.append(_in_another_process(path, "INSERT INTO meta VALUES ('after', 'rename')"))  # the fresh file

    monkeypatch.setattr(compaction.os, "replace", watched)
    store.close()
    assert seen == [False, True], "no other process got the old file between the copy and the rename"
    assert _holds_the_id(path) == []
    con = duckdb.connect(str(path))
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'after'").fetchall() == [("rename",)]
    finally:
        con.close()


def test_a_failed_rewrite_leaves_no_partial_copy_and_the_data_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shop.duckdb"
    store = _filled(path)
    store.erase_user(GONE)

    def full(_: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compaction, "sync", full)
    with caplog.at_level(logging.WARNING, logger=compaction.__name__):
        store.close()
    assert "No space left" in caplog.text
    assert sorted(f.name for f in tmp_path.iterdir()) == ["shop.duckdb"], "no .compact or .compact.wal left"
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=compaction.__name__):
        reopened = open_store(f"duckdb:///{path}")  # the mark stayed: rewritten now
    try:
        assert _holds_the_id(path) == []
        assert reopened.summary().events == 3000
        assert re.search(r"rewritten without the erased rows' bytes in [0-9.]+ s \(\d+ bytes", caplog.text)
    finally:
        reopened.close()


def test_a_rewrite_that_cannot_reopen_the_file_says_so_as_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shop.duckdb"
    store = _filled(path)
    store.erase_user(GONE)
    assert isinstance(store, DuckDBStore)
    store._con.close()  # the process died before the rewrite
    connect = duckdb.connect
    calls: list[str] = []

    def second_fails(target: str, *args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        calls.append(target)
        if len(calls) == 2:
            raise duckdb.IOException('Could not set lock on file "x": Conflicting lock is held')
        return connect(target, *args, **kwargs)

    monkeypatch.setattr(duckdb_store.duckdb, "connect", second_fails)
    with pytest.raises(StoreError, match="another process"):
        open_store(f"duckdb:///{path}")
