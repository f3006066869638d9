"""Jobs over HTTP: long work answers 202 and runs off the request and ingest paths, on both store backends.

The ingestion test holds an audience job inside its LightGBM fit (after the real scan and fit ran): under the
old design, marketing work on the store's writer thread, every event write then waited for the job."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopsense.api.app import create_app
from shopsense.domain import RecordKind
from shopsense.marketing.audiences import PropensityModel
from shopsense.services.shop import Shop
from shopsense.settings import Settings
from tests.conftest import load
from tests.unit.api.conftest import Api, job_of

ACK_S = 1.0
"""An event write is acknowledged within this, whatever a job does meanwhile."""
HELD_S = 60.0


@pytest.fixture(params=["duckdb", "postgresql"])
def served(request: pytest.FixtureRequest, trained: Path, tmp_path: Path) -> Iterator[Api]:
    """The API over the trained shop: its embedded store, or the same data imported into PostgreSQL."""
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    url = None if request.param == "duckdb" else request.getfixturevalue("postgres_url")
    settings = Settings(data_dir=data, store_url=url, serve={"reload_seconds": 0})
    with Shop(settings) as shop:  # the keys where this store keeps them (a file, or its api_keys table)
        if url is not None:
            load(shop.data, trained.parent / "items.parquet", RecordKind.ITEMS)
            load(shop.data, trained.parent / "events.parquet")
        keys = {
            scope: shop.keys.create(f"test {scope}", [scope])[0] for scope in ("events:write", "marketing", "admin")
        }
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, keys)


def _marketer(api: Api) -> dict[str, str]:
    return api.headers("marketing")


def test_ingestion_keeps_answering_while_an_audience_job_runs(served: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    fitted, release = threading.Event(), threading.Event()
    fit = PropensityModel.fit

    def held_fit(self: PropensityModel, *args: Any, **kwargs: Any) -> PropensityModel:
        model = fit(self, *args, **kwargs)
        fitted.set()
        assert release.wait(HELD_S), "the test never let the job go on"
        return model

    monkeypatch.setattr(PropensityModel, "fit", held_fit)
    marketer, writer = _marketer(served), served.headers("events:write")
    body = {"target": {"category": "Home"}, "spec": {"top_n": 25}, "limit": 10}
    started = served.client.post("/v1/audiences", json=body, headers=marketer)
    assert started.status_code == 202, started.text
    url = started.json()["url"]
    acks: list[float] = []
    try:
        while not fitted.is_set() or len(acks) < 5:  # while the job scans and fits, then while it is held
            assert len(acks) < 10_000, "the job never reached its fit"
            event = {"user_id": f"ingest-{len(acks)}", "item_id": "item-1", "type": "view"}
            event["timestamp"] = datetime.now(UTC).isoformat()
            sent = time.perf_counter()
            answer = served.client.post("/v1/events", json=event, headers=writer)
            acks.append(time.perf_counter() - sent)
            assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
            assert acks[-1] < ACK_S, f"event {len(acks)} took {acks[-1]:.2f}s while the job ran"
        running = served.client.get(url, headers=marketer).json()
        assert running["status"] == "running", "the writes went in while the job was still running"
        assert running["message"] == "fitting the propensity model" and 0 < running["progress"] < 1
    finally:
        release.set()
    job = job_of(served, started, marketer)
    assert job["status"] == "succeeded" and job["result"]["size"] == 25 and job["result"]["rows"] == 10, job
    assert job["started_at"] <= job["finished_at"]


def test_a_failed_job_reports_its_error_and_the_next_one_runs(served: Api) -> None:
    marketer = _marketer(served)
    early = {"as_of": "2000-01-01T00:00:00Z"}
    failed = job_of(served, served.client.post("/v1/profiles/build", json=early, headers=marketer), marketer)
    assert failed["status"] == "failed" and failed["error"] and failed["finished_at"], failed
    built = job_of(served, served.client.post("/v1/profiles/build", headers=marketer), marketer)
    assert built["status"] == "succeeded" and built["result"]["customers"] > 100
    listed = served.client.get("/v1/jobs", headers=marketer).json()
    assert [j["job_id"] for j in listed] == [built["job_id"], failed["job_id"]]
    missing = served.client.get("/v1/jobs/nope", headers=marketer)
    assert missing.status_code == 404
    assert served.client.get(f"/v1/jobs/{built['job_id']}/rows", headers=marketer).status_code == 404, "none kept"


def test_training_is_an_admin_job_that_serves_the_new_bundle(served: Api) -> None:
    api, admin = served, served.headers("admin")
    before = api.client.get("/v1/admin/models", headers=admin).json()["serving"]
    assert api.client.post("/v1/models/train", json={"pipeline": "nope"}, headers=admin).status_code == 400
    assert api.client.post("/v1/models/train", headers=_marketer(api)).status_code == 403
    job = job_of(api, api.client.post("/v1/models/train", headers=admin), admin)
    assert job["kind"] == "train" and job["status"] == "succeeded", job
    assert job["result"]["pipeline"] == "default" and job["result"]["version"] != before
    assert api.client.get("/v1/admin/models", headers=admin).json()["serving"] == job["result"]["version"]
