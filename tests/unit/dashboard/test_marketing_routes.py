"""The marketing pages over HTTP without a browser: each renders, their JSON helpers answer, the actions
need the marketing scope and the CSRF token (the browser tests in ``tests/browser`` drive the same pages)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from shopsense.api.app import create_app
from shopsense.ingest.synthetic import DEPARTMENTS
from shopsense.services.keys import KeyRing
from shopsense.services.shop import Shop
from shopsense.settings import Settings

CATEGORY = DEPARTMENTS[0]
"""A department of the synthetic shop the trained data holds."""


@dataclass
class Browser:
    """A signed-in client and its session's CSRF token."""

    client: TestClient
    csrf: str

    def post(self, url: str, **form: Any) -> Any:
        return self.client.post(url, data={"csrf": self.csrf, **form}, follow_redirects=False)


@dataclass
class Dashboard:
    app: Any
    settings: Settings
    keys: dict[str, str]

    def signed_in(self, scope: str) -> Browser:
        client = TestClient(self.app)  # not entered: the app started once, with the module's first client
        answer = client.post("/signin", data={"key": self.keys[scope], "next": "/segments"})
        assert answer.status_code == (200 if scope == "marketing" else 403), answer.text
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', answer.text)
        assert found, "the page carries its CSRF token"
        return Browser(client, found[1])


@pytest.fixture(scope="module")
def dashboard(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    data = tmp_path_factory.mktemp("marketing-pages") / "data"
    shutil.copytree(trained, data)
    settings = Settings(data_dir=data, serve={"reload_seconds": 0})  # type: ignore[arg-type]
    with Shop(settings) as shop:
        shop.marketing.build_profiles()
    ring = KeyRing(data / "keys.json")
    scopes = ("recommend:read", "marketing", "events:write")
    keys = {scope: ring.create(f"test {scope}", [scope])[0] for scope in scopes}
    app = create_app(settings)
    with TestClient(app):
        yield Dashboard(app, settings, keys)


@pytest.fixture(scope="module")
def marketer(dashboard: Dashboard) -> Browser:
    return dashboard.signed_in("marketing")


@pytest.fixture(scope="module")
def reader(dashboard: Dashboard) -> Browser:
    return dashboard.signed_in("recommend:read")


# -- segments -----------------------------------------------------------------------------------------


def test_the_segments_page_shows_the_editor_rfm_grid_and_saved_segments(marketer: Browser) -> None:
    page = marketer.client.get("/segments")
    assert page.status_code == 200, page.text
    assert 'id="expression"' in page.text and "RFM grid" in page.text and 'id="save-segment"' in page.text


def test_expressions_are_checked_as_typed(marketer: Browser) -> None:
    good = marketer.client.get("/segments/check", params={"expression": "frequency >= 2"}).json()
    assert good["ok"] and good["customers"] > 0
    bad = marketer.client.get("/segments/check", params={"expression": "frequncy >= 2"}).json()
    assert not bad["ok"] and "did you mean 'frequency'" in bad["message"] and bad["position"] == 0
    assert bad["caret"].splitlines()[1].strip() == "^" * len("frequncy")


def test_segments_are_saved_exported_and_deleted(marketer: Browser) -> None:
    saved = marketer.post("/segments", name="repeat", expression="frequency >= 2")
    assert saved.status_code == 303 and saved.headers["location"] == "/segments?saved=repeat"
    marketer.post("/segments", name="big", expression="monetary > 100")
    page = marketer.client.get("/segments?saved=repeat").text
    assert "Saved segment &#39;repeat&#39;" in page and "Overlaps" in page
    bad = marketer.post("/segments", name="typo", expression="monetry > 1")
    assert bad.status_code == 200 and "did you mean &#39;monetary&#39;" in bad.text, "shown, nothing saved"
    export = marketer.client.get("/segments/export.csv", params={"name": "repeat"})
    assert export.headers["content-type"].startswith("text/csv")
    lines = export.text.splitlines()
    assert lines[0] == '"user_id","segment"' and len(lines) > 1 and all(line.endswith('"repeat"') for line in lines[1:])
    unknown = marketer.client.get("/segments/export.csv", params={"name": "nope"})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"], "not every segment instead"
    assert marketer.post("/segments/delete", name="big").status_code == 303
    assert "monetary &gt; 100" not in marketer.client.get("/segments").text


def test_clusters_are_described_in_words(marketer: Browser) -> None:
    found = marketer.client.get("/segments/clusters", headers={"Accept": "application/json"}).json()
    assert found["clusters"] and all(c["description"] for c in found["clusters"])
    assert found["chart"]["data"][0]["type"] == "bar"
    again = marketer.client.get("/segments/clusters", headers={"Accept": "application/json"}).json()
    assert again["clusters"] == found["clusters"], "kept until the profiles are built again"


def test_a_key_without_the_marketing_scope_can_neither_read_nor_save_segments(reader: Browser) -> None:
    page = reader.client.get("/segments")
    assert page.status_code == 403 and "lacks the &#39;marketing&#39; scope" in page.text
    assert 'href="/segments"' not in page.text and 'href="/items"' in page.text, "the nav hides what it cannot open"
    assert reader.client.get("/segments/export.csv").status_code == 403
    assert reader.client.get("/segments/check", params={"expression": "frequency >= 1"}).status_code == 403
    refused = reader.post("/segments", name="x", expression="frequency >= 1")
    assert refused.status_code == 403


def test_actions_need_the_csrf_token(marketer: Browser) -> None:
    refused = marketer.client.post("/segments", data={"name": "x", "expression": "frequency >= 1"})
    assert refused.status_code == 403


# -- audiences ----------------------------------------------------------------------------------------


def test_a_propensity_audience_is_a_job_then_a_ranked_list_with_reasons(marketer: Browser) -> None:
    marketer.post("/segments", name="active", expression="frequency >= 1")
    started = marketer.post("/audiences", kind="brand", value="no such brand")
    assert started.status_code == 200 and "no such brand" in started.text, "a bad target is refused at once"
    started = marketer.post("/audiences", kind="category", value=CATEGORY, segment="active", top_n="50")
    assert started.status_code == 303, started.text
    job = started.headers["location"].split("job=")[1]
    status = _finished(marketer, job)
    assert status["status"] == "succeeded", status
    page = marketer.client.get(started.headers["location"]).text
    assert 'id="audience-rows"' in page and "Export CSV" in page
    rows = marketer.client.get(f"/audiences/jobs/{job}/export.csv").text.splitlines()
    assert rows[0] == '"user_id","score","rank","main_reason"' and 1 < len(rows) <= 51


def test_lookalikes_of_a_segment(marketer: Browser) -> None:
    marketer.post("/segments", name="big", expression="monetary > 100")
    page = marketer.client.get("/audiences", params={"seed": "big", "n": 20})
    assert page.status_code == 200 and page.text.count("seeds") >= 20
    export = marketer.client.get("/audiences/lookalike.csv", params={"seed": "big", "n": 20}).text.splitlines()
    assert len(export) == 21 and export[0] == '"user_id","similarity","rank","main_reason"'


def test_a_key_without_the_marketing_scope_cannot_see_or_build_audiences(reader: Browser) -> None:
    assert reader.client.get("/audiences").status_code == 403
    assert reader.client.get("/audiences/lookalike.csv", params={"seed": "frequency >= 1"}).status_code == 403
    assert reader.post("/audiences", kind="category", value=CATEGORY).status_code == 403


def test_an_audience_export_is_only_of_an_audience_job(dashboard: Dashboard, marketer: Browser) -> None:
    def other(job: Any) -> dict[str, Any]:
        job.keep_rows(pa.table({"user_id": ["u1"], "secret": ["kept by another kind of job"]}))
        return {}

    jobs = dashboard.app.state.shop.jobs
    started = jobs.submit("train", other)
    deadline = time.monotonic() + 30
    while jobs.rows(started.job_id) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    answer = marketer.client.get(f"/audiences/jobs/{started.job_id}/export.csv")
    assert answer.status_code == 404 and "secret" not in answer.text


# -- campaigns: the marketer's whole flow -------------------------------------------------------------


def test_create_assign_convert_read_out(dashboard: Dashboard, marketer: Browser) -> None:
    marketer.post("/segments", name="everyone", expression="frequency >= 0")
    today = datetime.now(UTC).date()
    created = marketer.post(
        "/campaigns",
        name="spring",
        channel="email",
        start=(today - timedelta(days=1)).isoformat(),
        end=(today + timedelta(days=7)).isoformat(),
        control_share="50",
        arm_name=["mail", ""],
        arm_share=["", ""],
        arm_treatment=["a personalised e-mail", ""],
    )
    assert created.status_code == 303 and created.headers["location"] == "/campaigns/spring", created.text
    page = marketer.client.get("/campaigns/spring").text
    assert 'id="assign"' in page and "Nobody is assigned yet" in page
    assigned = marketer.post("/campaigns/spring/assign", source="segment:everyone")
    assert assigned.status_code == 303, assigned.text
    page = marketer.client.get(assigned.headers["location"]).text
    assert "Assigned: the campaign now has" in page and 'id="previews"' in page
    treated = _treated(dashboard)
    now = datetime.now(UTC) - timedelta(minutes=1)
    events = [
        {"user_id": u, "item_id": "i1", "type": "purchase", "timestamp": now.isoformat(), "value": 20.0}
        for u in treated
    ]
    headers = {"Authorization": f"Bearer {dashboard.keys['events:write']}"}
    posted = TestClient(dashboard.app).post("/v1/events", json=events, headers=headers)
    assert posted.status_code == 200 and posted.json()["accepted"] == len(events), posted.text
    deadline = time.monotonic() + 30
    while "Ship mail" not in (page := marketer.client.get("/campaigns/spring").text):
        assert time.monotonic() < deadline, "the read-out never showed the lift"
        time.sleep(0.5)
    assert 'id="lifts"' in page and 'id="decision"' in page


def test_the_design_calculator_answers(marketer: Browser) -> None:
    found = marketer.client.get("/campaign-design", params={"baseline": 0.05, "n": 2000}).json()
    assert 0 < found["mde_abs"] < 0.05 and found["n_per_arm"] == 2000 and found["chart"]["data"]
    back = marketer.client.get("/campaign-design", params={"baseline": 0.05, "mde": found["mde_abs"]}).json()
    assert back["n_per_arm"] == 2000
    too_few = marketer.client.get("/campaign-design", params={"baseline": 0.05, "n": 2}).json()
    assert "cannot detect any lift" in too_few["problem"], "an answer, not a failed request"


def test_a_campaign_name_with_a_slash_is_refused_and_design_is_a_name_like_any(marketer: Browser) -> None:
    slashed = marketer.post(
        "/campaigns", name="a/b", channel="email", start="2024-01-01", end="2024-01-31", arm_name="m"
    )
    assert slashed.status_code == 200 and "cannot contain &#39;/&#39;" in slashed.text
    assert "a/b" not in marketer.client.get("/campaigns").text.replace('value="a/b"', ""), "nothing saved"
    made = marketer.post(
        "/campaigns", name="design", channel="email", start="2024-01-01", end="2024-01-31", arm_name="m"
    )
    assert made.status_code == 303 and made.headers["location"] == "/campaigns/design", made.text
    page = marketer.client.get("/campaigns/design")
    assert page.status_code == 200 and 'id="assign"' in page.text, "the campaign's page, not the calculator"


def test_a_key_without_the_marketing_scope_cannot_see_or_launch(marketer: Browser, reader: Browser) -> None:
    made = marketer.post(
        "/campaigns", name="autumn", channel="email", start="2024-01-01", end="2024-01-31", arm_name="mail"
    )
    assert made.status_code == 303, made.text
    assert reader.client.get("/campaigns/autumn").status_code == 403
    assert reader.client.get("/campaigns/autumn/contacts.csv").status_code == 403
    assert reader.client.get("/campaign-design", params={"baseline": 0.05, "n": 100}).status_code == 403
    assert reader.post("/campaigns/autumn/assign", source="expression:", expression="frequency >= 1").status_code == 403
    refused = reader.post("/campaigns", name="x", channel="email", start="2024-01-01", end="2024-01-02", arm_name="a")
    assert refused.status_code == 403
    assert marketer.client.get("/campaigns/autumn/contacts.csv").text.splitlines() == [
        '"user_id","variant","treatment"'
    ]


def _finished(browser: Browser, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        status: dict[str, Any] = browser.client.get(f"/audiences/jobs/{job}").json()
        if status["done"] or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def _treated(dashboard: Dashboard) -> list[str]:
    """The campaign's treated users, as its page lists them nowhere in full: through the serving service."""
    shop = dashboard.app.state.shop
    return shop.serving().marketing(lambda m: m.treated("spring")).result()  # type: ignore[no-any-return]


def test_an_unknown_campaign_is_a_404_page_naming_the_known_ones(marketer: Browser) -> None:
    page = marketer.client.get("/campaigns/nope")
    assert page.status_code == 404 and "no campaign &#39;nope&#39;" in page.text and "All campaigns" in page.text
