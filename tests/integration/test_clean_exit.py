"""A command and the server exit cleanly: nothing of DuckDB's outlives its bindings ("nanobind: leaked ...")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shopsense.services.keys import KeyRing
from tests.conftest import DATA
from tests.integration.test_serve import Server

pytestmark = pytest.mark.integration
LEAK = "nanobind: leaked"


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopsense", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SHOPSENSE_DATA_DIR": str(data)},
    )


def test_a_command_exits_without_leaks(tmp_path: Path) -> None:
    data = tmp_path / "d"
    imported = _cli(data, "import", "dataset", "online-retail", str(DATA / "online_retail_sample.csv"))
    assert imported.returncode == 0 and LEAK not in imported.stderr, imported.stderr[-3000:]
    stats = _cli(data, "stats", "--json")
    assert stats.returncode == 0 and LEAK not in stats.stderr, stats.stderr[-3000:]
    assert json.loads(stats.stdout)["events"] > 0


def test_the_server_starts_and_stops_without_leaks(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert _cli(data, "init").returncode == 0
    key, _ = KeyRing(data / "keys.json").create("marketer", ["marketing"])
    server = Server(data).start()
    try:
        assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200
        # A campaign without a control: the refusal passes a pydantic error through the store thread,
        # whose frames hold the store (the cycle that kept a connection alive until exit).
        body = {"name": "c", "variants": [{"name": "a", "weight": 1.0}], "channel": "email",
                "start": "2020-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"}  # fmt: skip
        refused = httpx.post(f"{server.url}/v1/campaigns", json=body, headers={"X-API-Key": key}, timeout=30)
        assert refused.status_code == 400, refused.text
    finally:
        assert server.process is not None
        server.process.send_signal(signal.SIGINT)  # Ctrl-C: the graceful stop
        _, err = server.process.communicate(timeout=60)
    stderr = err.decode()
    assert server.process.returncode == 0, stderr[-3000:]
    assert LEAK not in stderr, stderr[-3000:]
