"""Commands that only read the embedded store run beside each other, in separate processes; beside a writer
they stop with a message naming the process that holds the store and why."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from shopsense.errors import StoreError
from shopsense.services.data import DataService
from shopsense.settings import load_settings
from shopsense.store import open_store
from shopsense.store.compaction import COMPACT_MARK
from tests.conftest import load, write

EVENTS = "user_id,item_id,type,timestamp\n" + "".join(
    f"u{n % 7},i{n % 11},view,2024-01-01T00:{n:02d}:00Z\n" for n in range(40)
)
HOLD = """
import sys
from shopsense.services.shop import Shop
from shopsense.settings import load_settings

with Shop(load_settings(data_dir=sys.argv[1]), read_only=sys.argv[2] == "read") as shop:
    print(shop.data.stats().events, flush=True)
    sys.stdin.readline()  # hold the store until the test says so
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    service = DataService(load_settings(data_dir=folder))
    try:
        load(service, write(tmp_path, "e.csv", EVENTS))
    finally:
        service.close()
    return folder


@contextmanager
def _holding(data: Path, mode: str) -> Iterator[subprocess.Popen[str]]:
    """Another process with the store open (``read``: read-only, as the read-only commands open it)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "40"
        yield holder
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def _shopsense(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopsense", "--data-dir", str(data), *args],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_read_only_commands_run_side_by_side(data: Path, tmp_path: Path) -> None:
    with _holding(data, "read"):
        stats = subprocess.Popen(
            [sys.executable, "-m", "shopsense", "--data-dir", str(data), "stats", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        exported = _shopsense(data, "export", "events", str(tmp_path / "out.csv"))
        out, err = stats.communicate(timeout=120)
    assert stats.returncode == 0, err
    assert json.loads(out)["events"] == 40
    assert exported.returncode == 0, exported.stderr
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 41


def test_a_reader_beside_a_writer_is_told_who_holds_the_store(data: Path) -> None:
    with _holding(data, "write") as holder:
        done = _shopsense(data, "stats")
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "to read" in message and f"(PID {holder.pid})" in message
    assert "needs the store alone while it writes" in message
    assert "Traceback" not in done.stderr


def test_a_writer_beside_readers_is_told_it_needs_the_store_alone(data: Path, tmp_path: Path) -> None:
    path = write(tmp_path, "more.csv", EVENTS)
    with _holding(data, "read") as holder:
        done = _shopsense(data, "import", "events", str(path))
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert f"(PID {holder.pid})" in message and "needs it alone" in message
    assert "Traceback" not in done.stderr


def test_reading_a_store_that_does_not_exist_reads_an_empty_one(tmp_path: Path) -> None:
    done = _shopsense(tmp_path / "none", "stats", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 0
    assert not (tmp_path / "none" / "shopsense.duckdb").exists(), "a read makes no store"


def test_a_read_only_open_changes_nothing(data: Path) -> None:
    """No compaction at close (an erasure's pending rewrite waits for a writer), no migration at open."""
    path = data / "shopsense.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO meta VALUES (?, '1')", [COMPACT_MARK])
    before = path.read_bytes()
    reader = open_store(f"duckdb:///{path}", read_only=True)
    assert reader.summary().events == 40
    with pytest.raises(StoreError, match=r"cannot save campaign in .*: it is open to read only"):
        reader.save_campaign("c", "{}")
    reader.close()
    assert path.read_bytes() == before, "a reader neither compacts nor writes"
    with duckdb.connect(str(path)) as con:
        con.execute("DROP TABLE erasures")
    with pytest.raises(StoreError, match=r"no table\(s\) erasures yet.*shopsense init"):
        open_store(f"duckdb:///{path}", read_only=True)


def test_a_reader_in_the_writers_own_process_cannot_write(data: Path) -> None:
    """DuckDB gives a reader in the process that has the file open to write that writable instance: the store
    refuses the reader's writes itself."""
    url = f"duckdb:///{data / 'shopsense.duckdb'}"
    writer = open_store(url)
    try:
        reader = open_store(url, read_only=True)
        try:
            assert reader.summary().events == 40
            with pytest.raises(StoreError, match="open to read only"):
                reader.save_segment("s", "frequency > 1")
            with pytest.raises(StoreError, match="open to read only"):
                reader.handle().create_job("j", "audience")
            with pytest.raises(StoreError, match="open to read only"):
                reader.erase_user("u1")
        finally:
            reader.close()
        assert writer.saved_segments() == {} and writer.summary().events == 40
        writer.save_segment("s", "frequency > 1")  # the writer still writes
    finally:
        writer.close()


def test_profiles_clusters_and_similar_open_the_store_to_read(data: Path) -> None:
    """They only read: beside another reader they get as far as their own answer (or their own refusal)."""
    assert _shopsense(data, "profiles", "build").returncode == 0
    with _holding(data, "read"):
        shown = _shopsense(data, "profiles", "show", "u1", "--json")
        clustered = _shopsense(data, "clusters", "--k", "2")
        related = _shopsense(data, "similar", "i1")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["user_id"] == "u1"
    for done, why in ((clustered, "clustering features with no known value"), (related, "is not trained yet")):
        message = " ".join(done.stderr.split())
        assert "needs it alone" not in message and why in message, message
