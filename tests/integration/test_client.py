"""shopsense.client against a real server that is killed mid-batch and started again: the client's
re-sends leave exactly one copy of every event."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shopsense.client import Client, SendReport
from shopsense.services.keys import KeyRing
from shopsense.store import open_store
from tests.integration.test_serve import Server

pytestmark = pytest.mark.integration

BATCHES, BATCH = 40, 250


def test_a_server_killed_mid_batch_and_restarted_stores_each_event_the_client_sent_exactly_once(
    trained: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    key, _ = KeyRing(data / "keys.json").create("client", ["events:write"])
    server = Server(data).start()
    produced = threading.Event()
    report: list[SendReport] = []
    failure: list[BaseException] = []

    def events() -> Iterator[dict[str, Any]]:
        for n in range(BATCHES * BATCH):
            if n == 8 * BATCH:
                produced.set()  # the kill comes while later batches are being sent
            yield {"event_id": f"c-{n}", "user_id": f"user-{n % 7}", "item_id": "item-1", "type": "view"}

    def send() -> None:
        try:
            with Client(server.url, key, timeout=5, retries=50, backoff=0.05, max_backoff=1.0, deadline=120) as client:
                report.append(client.send_events(events(), batch_size=BATCH))
        except BaseException as exc:  # surfaced by the assertion below
            failure.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert produced.wait(60), "the client did not get going"
        time.sleep(0.05)
        server.kill()
        server.start()  # the same port: the client finds it again
        sender.join(180)
        assert not sender.is_alive() and not failure, failure
        assert report[0].accepted == BATCHES * BATCH and not report[0].rejected
        assert report[0].retries >= 1, "the kill interrupted at least one batch"
    finally:
        server.stop()
    store = open_store(f"duckdb:///{data / 'shopsense.duckdb'}")
    try:
        ids = store.scan_events()["event_id"].to_pylist()
    finally:
        store.close()
    sent = [i for i in ids if i is not None and i.startswith("c-")]
    assert len(sent) == len(set(sent)) == BATCHES * BATCH, "every event once: none lost, none twice"
