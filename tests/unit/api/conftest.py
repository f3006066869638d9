"""A trained data directory shared by the API tests, and clients with keys of each scope."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopsense.api.app import create_app
from shopsense.services.keys import KeyRing
from shopsense.settings import Settings


@dataclass
class Api:
    """A running app over a private copy of the trained data, with one key per scope."""

    client: TestClient
    settings: Settings
    keys: dict[str, str]

    def headers(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


def make_api(data: Path, **serve: object) -> Iterator[Api]:
    settings = Settings(data_dir=data, serve={"reload_seconds": 0, **serve})  # type: ignore[arg-type]
    ring = KeyRing(data / "keys.json")
    keys = {scope: ring.create(f"test {scope}", [scope])[0] for scope in ("events:write", "recommend:read", "admin")}
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, keys)


@pytest.fixture
def api(trained: Path, tmp_path: Path) -> Iterator[Api]:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    yield from make_api(data)


JOB_WAIT_S = 120.0


def job_of(api: Api, started: Any, headers: dict[str, str]) -> dict[str, Any]:
    """Follow a job a request started (202, ``Location`` = ``url``) until it ends; the job as last polled."""
    assert started.status_code == 202, started.text
    url = started.json()["url"]
    assert started.headers["location"] == url and url == f"/v1/jobs/{started.json()['job_id']}"
    deadline = time.monotonic() + JOB_WAIT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.client.get(url, headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{url} did not end within {JOB_WAIT_S}s")
