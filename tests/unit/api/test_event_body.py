"""Reading event bodies apart: a large body read in the reading process gets the answer the server
would give, refusals cross the process whole, and a killed process loses no request."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from shopsense.api import event_body
from shopsense.api.errors import ApiError
from shopsense.api.event_body import PROCESS_BYTES, EventReader
from shopsense.services.event_check import EventChecker
from shopsense.settings import Settings

NOW = datetime.now(UTC).isoformat()


def _body(events: int, **change: Any) -> bytes:
    """A JSON array of ``events`` events, every tenth of an unknown type (so some are rejected)."""
    batch = [
        {
            "event_id": f"e{n}",
            "user_id": f"user-{n % 7}",
            "item_id": f"item-{n}",
            "type": "teleport" if n % 10 == 0 else "view",
            "timestamp": NOW,
            **change,
        }
        for n in range(events)
    ]
    body = json.dumps(batch).encode()
    assert len(body) > PROCESS_BYTES
    return body


@pytest.fixture
def reader() -> Iterator[EventReader]:
    settings = Settings(serve={"max_batch": 1_000})  # type: ignore[arg-type]
    checker = EventChecker(settings)
    reader = EventReader(settings, checker)
    yield reader
    reader.close()
    checker.close()


def _wait_ready(reader: EventReader) -> None:
    deadline = time.monotonic() + 60
    while reader.ready() is None:
        assert time.monotonic() < deadline, "the reading process did not start within 60 s"
        time.sleep(0.05)


def _not_here(*args: Any) -> Any:
    raise AssertionError("read in the server, not in the reading process")


def test_a_large_body_is_read_apart_with_the_answer_the_server_gives(
    reader: EventReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _body(600)
    here, here_rejected = asyncio.run(reader.read(body))  # in the thread pool while the process starts
    _wait_ready(reader)
    monkeypatch.setattr(event_body, "read", _not_here)  # the spawned process has its own, unpatched
    apart, apart_rejected = asyncio.run(reader.read(body))
    assert isinstance(here, pa.Table) and isinstance(apart, pa.Table)
    assert apart.equals(here) and apart.num_rows == 540
    assert apart_rejected == here_rejected and [r.index for r in apart_rejected] == list(range(0, 600, 10))


def test_refusals_cross_from_the_reading_process_with_status_and_code(
    reader: EventReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wait_ready(reader)
    monkeypatch.setattr(event_body, "read", _not_here)
    with pytest.raises(ApiError) as too_many:
        asyncio.run(reader.read(_body(1_001)))
    assert (too_many.value.status, too_many.value.code) == (413, "batch_too_large")
    with pytest.raises(ApiError) as not_json:
        asyncio.run(reader.read(_body(600)[:-1]))
    assert (not_json.value.status, not_json.value.code) == (422, "invalid_request")


def test_a_killed_reading_process_loses_no_request_and_is_replaced(reader: EventReader) -> None:
    _wait_ready(reader)
    pool = reader.ready()
    assert pool is not None
    os.kill(pool.submit(os.getpid).result(), signal.SIGKILL)
    time.sleep(0.5)  # the pool notices its process is gone
    rows, rejected = asyncio.run(reader.read(_body(600)))
    assert rows.num_rows == 540 and len(rejected) == 60
    _wait_ready(reader)
    assert reader.ready() is not pool


def test_no_processes_when_set_to_zero() -> None:
    settings = Settings(serve={"parse_processes": 0})  # type: ignore[arg-type]
    checker = EventChecker(settings)
    reader = EventReader(settings, checker)
    rows, _ = asyncio.run(reader.read(_body(600)))
    assert reader.ready() is None and rows.num_rows == 540
    reader.close()
    checker.close()
