"""The journal: records synced whole, read back in order, a cut-off tail dropped, damage refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from shopsense.errors import StoreError
from shopsense.services.event_check import EventChecker
from shopsense.settings import Settings
from shopsense.store import journal, open_store
from shopsense.store.journal import Journal, first_of_each_key


def _table(*sent: str) -> pa.Table:
    return pa.table({"key_hi": pa.array(range(len(sent)), pa.uint64()), "sent": list(sent)})


def test_records_come_back_in_order_across_sealed_files(tmp_path: Path) -> None:
    path = tmp_path / "j" / "events.journal"
    log = Journal(path)
    log.append(_table("a", "b"))
    first = log.seal()
    log.append(_table("c"))
    second = log.seal()
    log.append(_table("d"))
    assert [f.name for f in journal.segments(path)] == ["events.journal.1", "events.journal.2", "events.journal"]
    sent = [t.column("sent").to_pylist() for f in journal.segments(path) for t in journal.read(f)]
    assert sent == [["a", "b"], ["c"], ["d"]]
    journal.remove([first])
    assert log.seal().name == "events.journal.3", "numbered on from the last sealed file still there"
    log.close()
    assert [f.name for f in journal.segments(path)] == ["events.journal.2", "events.journal.3", "events.journal"]
    reopened = Journal(path)
    assert reopened.size == 0 and second.exists()
    reopened.close()


def test_replay_writes_every_file_into_the_store_once_and_deletes_them(tmp_path: Path) -> None:
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    checker = EventChecker(Settings(data_dir=tmp_path))
    now = datetime.now(UTC).isoformat()
    rows, _ = checker.validate(
        [{"event_id": e, "user_id": "u", "item_id": "i", "type": "view", "timestamp": now} for e in ("a", "b", "c")]
    )
    assert store.journal_path is not None
    log = Journal(store.journal_path)
    log.append(rows.slice(0, 2))
    log.seal()
    log.append(rows.slice(1, 2))  # b again, as a re-sent request would bring it
    log.close()
    result = journal.replay(store, store.journal_path)
    assert result is not None and (result.received, result.written) == (3, 3)
    assert journal.segments(store.journal_path) == []
    assert journal.replay(store, store.journal_path) is None
    assert store.summary().events == 3
    store.close()


def test_a_record_cut_short_at_the_end_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "events.journal"
    log = Journal(path)
    log.append(_table("a"))
    whole = log.size
    log.append(_table("b", "c"))
    log.close()
    with path.open("r+b") as f:  # a crash in the middle of the second write
        f.truncate(whole + 20)
    assert [t.column("sent").to_pylist() for t in journal.read(path)] == [["a"]]


def test_a_damaged_record_before_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "events.journal"
    log = Journal(path)
    log.append(_table("a"))
    log.append(_table("b"))
    log.close()
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="byte 0 is damaged"):
        journal.read(path)


def test_first_of_each_key_keeps_the_first_copy_of_each_whole_key() -> None:
    group = pa.table(
        {
            "key_hi": pa.array([1, 1, 2, 1, 2], pa.uint64()),
            "key_lo": pa.array([5, 6, 7, 5, 8], pa.uint64()),
            "sent": ["a", "b", "c", "a again", "d"],
        }
    )
    assert first_of_each_key(group).column("sent").to_pylist() == ["a", "b", "c", "d"]
    assert first_of_each_key(group.slice(0, 3)).num_rows == 3, "a shared high half alone is no repeat"
