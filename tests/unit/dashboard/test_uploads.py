"""Uploads hold raw customer rows: a successful import deletes its file, a stale one goes at the next upload."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from shopsense.services.uploads import KEEP_HOURS, Uploads
from shopsense.settings import Settings
from tests.unit.api.conftest import Api
from tests.unit.dashboard.conftest import sign_in

EVENTS = b"user_id,item_id,type,timestamp\nuser-1,item-1,view,2024-01-01T00:00:00Z\n"


def _import(dash: Api, csrf: str) -> tuple[str, dict[str, object]]:
    uploaded = dash.client.post(
        "/data/upload", data={"csrf": csrf, "kind": "events"}, files={"file": ("e.csv", EVENTS)}, follow_redirects=False
    )
    assert uploaded.status_code == 303, uploaded.text
    token = uploaded.headers["location"].split("upload=")[1].split("&")[0]
    form = {"csrf": csrf, "upload": token, "kind": "events", "on_error": "skip"}
    form.update({f"col_{f}": f for f in ("user_id", "item_id", "type", "timestamp")})
    started = dash.client.post("/data/import", data=form, follow_redirects=False)
    assert started.status_code == 303, started.text
    job_id = started.headers["location"].split("job=")[1]
    deadline = time.monotonic() + 60
    while (job := dash.client.get(f"/data/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return token, job


def test_a_successful_import_deletes_its_upload(dash: Api) -> None:
    csrf = sign_in(dash.client, dash.keys["admin"])
    token, job = _import(dash, csrf)
    assert job["status"] == "succeeded", job
    assert not (dash.settings.data_dir / "uploads" / token).exists(), "the raw file is gone"
    page = dash.client.get("/data").text
    assert "At most 16 MiB per file" in page and "serve.max_body_bytes" in page


def test_an_upload_not_imported_is_removed_after_its_hours(tmp_path: Path) -> None:
    uploads = Uploads(Settings(data_dir=tmp_path))
    old = uploads.save("old.csv", io.BytesIO(EVENTS))
    then = time.time() - KEEP_HOURS * 3600 - 60
    os.utime(uploads.root / old, (then, then))
    fresh = uploads.save("new.csv", io.BytesIO(EVENTS))
    assert not (uploads.root / old).exists() and (uploads.root / fresh).exists()
