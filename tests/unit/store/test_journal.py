"""The journal: records synced whole, read back in order, a cut-off tail dropped, damage refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from shopsense.errors import StoreError
from shopsense.store import journal
from shopsense.store.journal import Journal, first_of_each_key


def _table(*sent: str) -> pa.Table:
    return pa.table({"key_hi": pa.array(range(len(sent)), pa.uint64()), "sent": list(sent)})


def test_records_come_back_in_order_and_clear_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "j" / "events.journal"
    log = Journal(path)
    log.append(_table("a", "b"))
    log.append(_table("c"))
    assert [t.column("sent").to_pylist() for t in journal.read(path)] == [["a", "b"], ["c"]]
    log.clear()
    assert log.size == 0 and journal.read(path) == []
    log.append(_table("d"))
    log.close()
    assert Journal(path).size == path.stat().st_size > 0, "a reopened journal knows its size"
    assert [t.column("sent").to_pylist() for t in journal.read(path)] == [["d"]]


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
