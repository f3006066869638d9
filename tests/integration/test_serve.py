"""The real server: `shopsense serve` in its own process, driven over HTTP, killed with SIGKILL mid-ingest."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shopsense.services.keys import KeyRing
from shopsense.store import open_store
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration


class Server(ServerProcess):
    """`shopsense serve` over a data directory."""

    def __init__(self, data: Path) -> None:
        super().__init__({**os.environ, "SHOPSENSE_DATA_DIR": str(data)})
        self.data = data


@pytest.fixture
def server_data(trained: Path, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    key, _ = KeyRing(data / "keys.json").create("integration", ["admin"])
    yield data, key


def test_real_process_serves_and_survives_sigkill_without_losing_acknowledged_events(
    server_data: tuple[Path, str],
) -> None:
    data, key = server_data
    headers = {"Authorization": f"Bearer {key}"}
    server = Server(data).start()
    try:
        answer = httpx.get(f"{server.url}/v1/recommendations", params={"user_id": "user-2", "k": 5}, headers=headers)
        assert answer.status_code == 200 and len(answer.json()["items"]) == 5
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(worker: int) -> None:
            with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
                n = 0
                while not stop.is_set():
                    ids = [f"w{worker}-{n}-{j}" for j in range(600 if worker == 0 else 20)]  # 600: read apart
                    n += 1
                    now = datetime.now(UTC).isoformat()
                    batch = [
                        {
                            "event_id": i,
                            "user_id": f"user-{worker}",
                            "item_id": "item-1",
                            "type": "view",
                            "timestamp": now,
                        }
                        for i in ids
                    ]
                    try:
                        response = client.post("/v1/events", json=batch)
                    except httpx.HTTPError:
                        return  # the server died mid-request: that batch was never acknowledged
                    if response.status_code == 200 and response.json()["accepted"] == len(ids):
                        with lock:
                            acknowledged.extend(ids)

        workers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while not (reading := _reading_processes(server)) and time.monotonic() < deadline:
            time.sleep(0.05)
        goal = len(acknowledged) + 2_000  # acknowledged while large batches are read in their own process
        while len(acknowledged) < goal and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        stop.set()
        for worker in workers:
            worker.join()
    finally:
        server.stop()
    assert reading, "no process reading large batches was started"
    assert len(acknowledged) >= goal
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in reading) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in reading), "the reading process outlived the killed server"
    store = open_store(f"duckdb:///{data / 'shopsense.duckdb'}")
    try:
        stored = set(store.scan_events(user_ids=[f"user-{w}" for w in range(4)]).column("event_id").to_pylist())
    finally:
        store.close()
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged events lost after SIGKILL"
    restarted = Server(data).start()
    try:
        history = httpx.get(f"{restarted.url}/v1/users/user-0/history", params={"limit": 5}, headers=headers)
        assert history.status_code == 200 and history.json()["events"][0]["event_id"].startswith("w0-")
    finally:
        restarted.stop()


def _reading_processes(server: Server) -> list[int]:
    """The server's children that read event bodies (multiprocessing's spawned workers)."""
    assert server.process is not None
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == server.process.pid and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
