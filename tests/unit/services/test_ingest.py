"""API ingest without HTTP: validated events committed exactly once, the import log summarised."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shopsense.services.serving import ServingService
from shopsense.services.writer import Journaled, StoreWriter
from shopsense.settings import Settings
from shopsense.store import journal, open_store
from shopsense.store.duckdb import DuckDBStore

NOW = datetime.now(UTC).replace(microsecond=0)


def _event(user: str = "u1", item: str = "i1", kind: str = "view", **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "type": kind, "timestamp": NOW.isoformat(), **extra}


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[ServingService]:
    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings.resolved_store_url)
    service = ServingService(settings, store)
    yield service
    service.close()
    store.close()


def _abandon(writer: StoreWriter) -> None:
    """End the threads of a writer whose process "crashed", writing nothing more, as a killed process would.
    Left running, they would hold the closed store until the interpreter's exit, past DuckDB's bindings."""
    writer._apply = _nothing  # type: ignore[method-assign]
    writer._log = _nothing  # type: ignore[method-assign]
    writer.journal = None
    writer.close()


def _nothing(*_: object, **__: object) -> None:
    return None


def _keyed(serving: ServingService, *event_ids: str, user: str = "u1") -> pa.Table:
    table, rejected = serving.checker.validate([_event(user=user, item=f"i-{e}", event_id=e) for e in event_ids])
    assert not rejected
    return table


def test_writer_stores_an_event_sent_twice_in_one_commit_once(tmp_path: Path, serving: ServingService) -> None:
    store = open_store(f"duckdb:///{tmp_path / 'w.duckdb'}")
    assert isinstance(store, DuckDBStore)
    writer = StoreWriter(store, wait=0.5)  # a long window: the three appends share one commit
    try:
        futures = [writer.append(_keyed(serving, *ids)) for ids in (["a", "b"], ["b"], ["a", "c"])]
        wait(futures)
        results = {id(f.result()) for f in futures}
        assert len(results) == 1, "one commit for all three"
        result = futures[0].result()
        assert (result.received, result.written) == (3, 3)
        assert store._memory is not None, "the writer, the store's only writer, had it remember its keys"
    finally:
        writer.close()
    assert store.summary().events == 3
    store.close()


def test_events_stored_before_the_server_started_are_not_stored_again(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings.resolved_store_url)
    first = ServingService(settings, store)
    first.submit_events(_keyed(first, "a", "b")).result()
    first.close()
    store.close()
    store = open_store(settings.resolved_store_url)  # a restart: the keys come back from the table
    second = ServingService(settings, store)
    try:
        assert second.submit_events(_keyed(second, "b", "c")).result() == Journaled(2)
        assert second.writer.call(lambda s: s.summary().events).result() == 3, "b was stored already"
        second.submit_events(_keyed(second, "c")).result()
    finally:
        second.close()
    assert store.summary().events == 3
    store.close()


def test_acknowledged_events_are_journaled_until_written_and_read_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shopsense.services.writer.APPLY_SECONDS", 3600.0)
    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings.resolved_store_url)
    assert store.journal_path is not None
    service = ServingService(settings, store)
    service.writer.wait = 0
    assert service.submit_events(_keyed(service, "a", "b")).result() == Journaled(2)
    assert store.journal_path.stat().st_size > 0, "acknowledged: in the journal"
    assert store.summary().events == 0, "not yet in the store (read beside the writer, for the test only)"
    assert service.live.count("u1") == 2, "recommendations see them already"
    service.writer.journal.close()  # type: ignore[union-attr]  # a crash: nothing more is written
    _abandon(service.writer)
    store.close()
    store = open_store(settings.resolved_store_url)  # opening replays the journal
    try:
        assert store.summary().events == 2
        assert store.journal_path is not None and journal.segments(store.journal_path) == [], "and deletes it"
    finally:
        store.close()


def test_journaled_events_are_written_in_without_any_other_job_to_wake_the_store_thread(
    monkeypatch: pytest.MonkeyPatch, serving: ServingService
) -> None:
    """With only events arriving, the store thread must still write them in after ``APPLY_SECONDS``: it used
    to sleep until another job came, keeping a small table per request in memory (up to ``APPLY_ROWS``)."""
    monkeypatch.setattr("shopsense.services.writer.APPLY_SECONDS", 0.2)
    serving.writer.wait = 0
    time.sleep(0.3)  # the store thread is idle, waiting for a job
    for n in range(5):
        serving.submit_events(_keyed(serving, f"e{n}")).result()
    deadline = time.monotonic() + 5
    while serving.writer._pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not serving.writer._pending, "written in, no longer held in memory"
    assert serving.writer.call(lambda store: store.summary().events).result() == 5, "(read on the store thread)"


def test_reads_and_erasures_wait_for_the_journal_to_be_written(
    tmp_path: Path, serving: ServingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shopsense.services.writer.APPLY_SECONDS", 3600.0)
    serving.writer.wait = 0
    serving.submit_events(_keyed(serving, "a", "b", user="gone")).result()
    serving.submit_events(_keyed(serving, "c", user="kept")).result()
    assert serving.writer.call(lambda s: s.summary().events).result() == 3, "a read sees every acknowledged event"
    assert serving.erase_user("gone").deleted["events"] == 2
    assert serving.store.journal_path is not None
    assert [f.stat().st_size for f in journal.segments(serving.store.journal_path)] == [0], (
        "written in and deleted before the erasure: a replay cannot bring the erased events back"
    )


def _api_log(store: DuckDBStore) -> list[tuple[object, ...]]:
    return store._con.execute(
        "SELECT batch_id, received, written FROM imports WHERE source = 'api' ORDER BY batch_id"
    ).fetchall()


def test_the_writer_logs_a_summary_of_its_commits_not_a_row_each(
    tmp_path: Path, serving: ServingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"duckdb:///{tmp_path / 'w.duckdb'}")
    assert isinstance(store, DuckDBStore)
    writer = StoreWriter(store, wait=0)
    try:
        results = [writer.append(_keyed(serving, *ids)).result() for ids in (["a", "b"], ["b", "c"], ["d"])]
        assert len({r.batch_id for r in results}) == 3, "three commits, numbered apart"
        assert writer.call(_api_log).result() == [], "no log row per commit"
        monkeypatch.setattr("shopsense.services.writer.LOG_SECONDS", 0.0)
        writer.append(_keyed(serving, "e")).result()
        logged = writer.call(_api_log).result()  # read on the writer's thread, after its queued work
        assert logged == [(results[-1].batch_id + 1, 6, 5)], "one row sums every commit since the last"
        monkeypatch.setattr("shopsense.services.writer.LOG_SECONDS", 3600.0)
        last = writer.append(_keyed(serving, "f", "a")).result()
    finally:
        writer.close()
    assert _api_log(store)[1:] == [(last.batch_id, 2, 1)], "closing logs what was left"
    store.close()


def test_commits_without_log_rows_still_get_new_batch_ids_after_a_restart(
    tmp_path: Path, serving: ServingService
) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    batches = []
    for ids, crash in ((["a", "b"], True), (["c"], False)):
        store = open_store(url)
        writer = StoreWriter(store, wait=0)  # no journal: each group is committed directly
        batches.append(writer.append(_keyed(serving, *ids)).result().batch_id)
        if not crash:  # a crash leaves no summary row in the import log: the events alone number on
            writer.close()
        else:
            _abandon(writer)
        store.close()
    assert batches[1] > batches[0]
    store = open_store(url)
    assert isinstance(store, DuckDBStore)
    stored = store._con.execute("SELECT batch_id, count(*) FROM events GROUP BY ALL ORDER BY 1").fetchall()
    store.close()
    assert stored == [(batches[0], 2), (batches[1], 1)]


def test_a_failed_write_of_the_journal_fails_the_call_and_is_retried(
    serving: ServingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shopsense.services.writer.APPLY_SECONDS", 3600.0)
    serving.writer.wait = 0
    serving.submit_events(_keyed(serving, "a", "b")).result()
    real = serving.store.append_events
    monkeypatch.setattr(serving.store, "append_events", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        serving.writer.call(lambda s: s.summary().events).result()
    assert serving.store.journal_path is not None
    assert sum(f.stat().st_size for f in journal.segments(serving.store.journal_path)) > 0, "still journaled"
    monkeypatch.setattr(serving.store, "append_events", real)
    assert serving.writer.call(lambda s: s.summary().events).result() == 2, "the next call writes them first"
