"""A marketer's whole flow in Chromium: sign in, write a segment, build an audience from it, create a
campaign, assign it; conversions arrive as events through the API; the read-out shows the lift. A read-only
key sees no launch button, and the server refuses its launch anyway."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shopsense.ingest.synthetic import DEPARTMENTS
from tests.browser.conftest import Dashboard, Problems, signed_in, wait_for

pytestmark = pytest.mark.integration

CAMPAIGN = "flow_spring"


def settle(page: Any) -> None:
    """Let the page's own requests (clusters, the calculator) end before leaving it: a navigation would
    abort them, and the ``page`` fixture counts an aborted request as a failure."""
    page.wait_for_load_state("networkidle")


def test_segment_audience_campaign_assign_convert_read_out(page: Any, dashboard: Dashboard) -> None:
    signed_in(page, dashboard.keys["marketing"], "/segments")

    # a segment, checked as it is typed, then saved
    page.fill("#segment-name", "flow_buyers")
    page.fill("#expression", "frequency >= 1")
    page.wait_for_selector("#check.ok")
    settle(page)
    with page.expect_navigation():
        page.click("#save-segment")
    assert "Saved segment 'flow_buyers'" in page.text_content("main")
    assert page.locator("#saved-segments", has_text="flow_buyers").count() == 1

    # an audience from it: a propensity job whose progress the page follows, then the ranked customers
    settle(page)
    page.click("#saved-segments tr:has-text('flow_buyers') >> text=Audience")
    assert page.input_value("#audience-segment") == "flow_buyers"
    page.select_option("#target-kind", "category")
    page.fill("#target-value", DEPARTMENTS[0])
    with page.expect_navigation():
        page.click("#build-audience")
    page.wait_for_selector("#audience-rows", timeout=120_000)  # the page reloads itself when the job ends
    assert int(page.text_content("#audience-size").replace(",", "")) > 0
    assert page.locator("#audience-rows tbody tr").first.locator("td").nth(3).text_content().strip()

    # a campaign from the audience: a 50% hold-out and one e-mail arm, then assigned (launched)
    with page.expect_navigation():
        page.click("text=Use in a campaign")
    audience = page.url.split("audience=")[1]
    today = datetime.now(UTC).date()
    page.fill("#campaign-name", CAMPAIGN)
    page.fill("input[name=start]", (today - timedelta(days=1)).isoformat())
    page.fill("#control-share", "50")
    with page.expect_navigation():
        page.click("#create-campaign")
    assert f"/campaigns/{CAMPAIGN}?" in page.url
    assert page.input_value("#assign-source") == f"audience:{audience}", "the audience is offered first"
    settle(page)
    with page.expect_navigation():
        page.click("#assign")
    assert "Assigned" in page.text_content("#campaign-notice")
    assert page.locator("#previews tbody tr").count() > 0, "each treated customer's message is previewed"

    # the treated customers buy: their purchases arrive through the API as events
    contacts = page.request.get(f"/campaigns/{CAMPAIGN}/contacts.csv")
    treated = [row["user_id"] for row in csv.DictReader(io.StringIO(contacts.text()))]
    assert treated
    when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    events = [
        {"user_id": u, "item_id": "item-1", "type": "purchase", "timestamp": when, "value": 25.0} for u in treated
    ]
    headers = {"Authorization": f"Bearer {dashboard.keys['admin']}"}
    posted = httpx.post(f"{dashboard.url}/v1/events", json=events, headers=headers, timeout=30)
    assert posted.status_code == 200 and posted.json()["accepted"] == len(events), posted.text

    # the read-out shows the lift, its interval as a plot, and the decision
    def shipped() -> bool:
        page.reload()
        settle(page)
        return page.locator("#decision", has_text="Ship").count() == 1

    wait_for(shipped, timeout_s=60)
    conversion = page.locator("#lifts tbody tr", has_text="conversion").first
    assert conversion.locator("td.lift").text_content().startswith("+")
    page.wait_for_load_state("networkidle")
    assert page.locator("#readout div.chart .main-svg").count() >= 2, "lift and per-arm plots are drawn"
    page.wait_for_selector("#design-answer:has-text('users per arm')")


def test_a_read_only_key_cannot_launch(page: Any, dashboard: Dashboard, problems: Problems) -> None:
    signed_in(page, dashboard.keys["marketing"], "/campaigns")
    page.fill("#campaign-name", "flow_readonly")
    with page.expect_navigation():
        page.click("#create-campaign")
    settle(page)
    page.context.clear_cookies()

    signed_in(page, dashboard.keys["readonly"], "/items")
    problems.allow("status of 403")  # the refused page itself
    assert page.goto("/campaigns/flow_readonly").status == 403, "no marketing scope: not even the page"
    csrf = page.get_attribute("meta[name=csrf-token]", "content")
    refused = page.request.post(
        "/campaigns/flow_readonly/assign", form={"csrf": csrf, "source": "expression:", "expression": "frequency >= 1"}
    )
    assert refused.status == 403, "the server refuses whatever the page showed"
    settle(page)
