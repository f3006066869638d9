"""API ingest without HTTP: validated events committed exactly once, the import log summarised."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shopsense.services.serving import ServingService
from shopsense.services.writer import StoreWriter, _first_of_each_key
from shopsense.settings import Settings
from shopsense.store import open_store
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


def test_a_commit_keeps_the_first_copy_of_each_whole_key() -> None:
    group = pa.table(
        {
            "key_hi": pa.array([1, 1, 2, 1, 2], pa.uint64()),
            "key_lo": pa.array([5, 6, 7, 5, 8], pa.uint64()),
            "sent": ["a", "b", "c", "a again", "d"],
        }
    )
    assert _first_of_each_key(group).column("sent").to_pylist() == ["a", "b", "c", "d"]
    assert _first_of_each_key(group.slice(0, 3)).num_rows == 3, "a shared high half alone is no repeat"


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
        again = second.submit_events(_keyed(second, "b", "c")).result()
        assert (again.written, again.already_stored) == (1, 1)
        assert second.submit_events(_keyed(second, "c")).result().already_stored == 1
    finally:
        second.close()
    assert store.summary().events == 3
    store.close()


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


def test_commits_without_log_rows_still_get_new_batch_ids_after_a_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    batches = []
    for ids, crash in ((["a", "b"], True), (["c"], False)):
        store = open_store(settings.resolved_store_url)
        service = ServingService(settings, store)
        service.writer.wait = 0
        batches.append(service.submit_events(_keyed(service, *ids)).result().batch_id)
        if not crash:  # a crash leaves no summary row in the import log: the events alone number on
            service.close()
        store.close()
    assert batches[1] > batches[0]
    store = open_store(settings.resolved_store_url)
    assert isinstance(store, DuckDBStore)
    stored = store._con.execute("SELECT batch_id, count(*) FROM events GROUP BY ALL ORDER BY 1").fetchall()
    store.close()
    assert stored == [(batches[0], 2), (batches[1], 1)]
