"""The marketing pages in Chromium: each renders with its plots and no error; the segment editor checks as
one types; a read-only key sees no save, build or launch button."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Dashboard, Problems, signed_in

pytestmark = pytest.mark.integration

PAGES = {
    "/segments": True,
    "/audiences": False,
    "/audiences?seed=frequency%20%3E%3D%202&n=50": True,
    "/campaigns": False,
}
"""Each page, and whether it has plots before anything was built (a campaign's page is drawn in the flow test)."""


def _drawn(page: Any, path: str) -> None:
    charts = page.locator("div.chart:visible")
    assert charts.count() > 0, f"{path} has plots"
    for n in range(charts.count()):
        assert charts.nth(n).locator(".main-svg").count() > 0, f"chart {n} of {path} was drawn"


@pytest.mark.parametrize("path", PAGES)
def test_every_marketing_page_renders_with_its_plots_and_no_error(page: Any, dashboard: Dashboard, path: str) -> None:
    signed_in(page, dashboard.keys["marketing"], "/campaigns")  # a page that sends no requests of its own
    assert page.goto(path).status == 200
    page.wait_for_load_state("networkidle")
    assert page.locator("[role=alert]").count() == 0, page.locator("[role=alert]").first.text_content()
    if path == "/segments":
        page.wait_for_selector("#clusters-table tbody tr")  # the clusters arrive after the page
    if PAGES[path]:
        _drawn(page, path)


def test_the_segment_editor_checks_as_you_type(page: Any, dashboard: Dashboard) -> None:
    signed_in(page, dashboard.keys["marketing"], "/segments")
    page.fill("#expression", "frequncy >= 2 and recency_days <= 30")
    page.wait_for_selector("#check.error")
    assert "did you mean 'frequency'?" in page.text_content("#check")
    assert page.text_content("#caret").splitlines()[1].strip() == "^" * len("frequncy")
    assert page.is_disabled("#save-segment"), "an invalid segment cannot be saved"
    page.fill("#expression", "frequency >= 2 and recency_days <= 30")
    page.wait_for_selector("#check.ok")
    assert "customers" in page.text_content("#check") and page.is_enabled("#save-segment")


def test_a_key_without_the_marketing_scope_is_refused_the_marketing_pages(
    page: Any, dashboard: Dashboard, problems: Problems
) -> None:
    signed_in(page, dashboard.keys["readonly"], "/items")
    problems.allow("status of 403")  # the refused pages themselves
    nav = page.locator("header nav a")
    assert nav.all_inner_texts() == ["Overview", "Items", "Models"], "the nav hides what the key cannot open"
    for path in ("/segments", "/audiences", "/campaigns"):
        assert page.goto(path).status == 403
        assert "lacks the 'marketing' scope" in page.locator("p[role=alert]").inner_text()
