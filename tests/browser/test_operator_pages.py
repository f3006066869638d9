"""The operator pages in Chromium: each renders cleanly, sign-in and scopes hold, the alpha slider re-ranks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shopsense.services.keys import KeyRing
from tests.browser.conftest import Dashboard, Problems, new_key, signed_in, wait_for

pytestmark = pytest.mark.integration

PAGES = [
    "/",
    "/?start=2000-01-01&end=2100-01-01",
    "/customers",
    "/customers?user=user-3",
    "/items",
    "/items?item=item-5",
    "/models",
    "/data",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_operator_page_renders_with_its_plots_and_no_error(page: Any, dashboard: Dashboard, path: str) -> None:
    signed_in(page, dashboard.keys["admin"])
    answer = page.goto(path)
    assert answer.status == 200
    page.wait_for_load_state("networkidle")
    assert page.locator("header nav a").count() == 8
    charts = page.locator("div.chart")
    for n in range(charts.count()):
        assert charts.nth(n).locator(".main-svg").count() > 0, f"chart {n} of {path} was drawn"


def test_without_a_session_every_page_sends_you_to_sign_in(page: Any) -> None:
    for path in ("/", "/customers", "/items", "/models", "/data"):
        page.goto(path)
        assert "/signin" in page.url
        assert page.locator("input[name=key]").count() == 1


def _csrf(page: Any) -> str:
    token: str = page.locator("meta[name=csrf-token]").get_attribute("content")
    return token


def test_a_read_only_key_sees_no_model_actions_and_the_server_refuses_them(
    page: Any, dashboard: Dashboard, problems: Problems
) -> None:
    signed_in(page, dashboard.keys["readonly"])
    page.goto("/models")
    assert page.locator("table#bundles tbody tr").count() >= 1, "it still sees the bundles"
    for action in ("#train", "#rollback", "button.promote"):
        assert page.locator(action).count() == 0, f"{action} is hidden from a read-only key"
    csrf = _csrf(page)
    for path, form in (("/models/train", {}), ("/models/rollback", {}), ("/models/promote", {"version": "x"})):
        answer = page.request.post(path, form={"csrf": csrf, **form}, max_redirects=0)
        assert answer.status == 403, f"{path} refused to a read-only key"
    problems.allow("status of 403")  # the data page, refused
    assert page.goto("/data").status == 403, "the data page needs the admin scope"
    assert page.locator("form#upload").count() == 0


def test_an_admin_sees_the_actions_but_a_post_without_the_csrf_token_is_refused(
    page: Any, dashboard: Dashboard
) -> None:
    signed_in(page, dashboard.keys["admin"])
    page.goto("/models")
    assert page.locator("#train").count() == 1 and page.locator("#rollback").count() == 1
    assert page.request.post("/models/rollback", form={}, max_redirects=0).status == 403
    assert page.request.post("/models/rollback", form={"csrf": "forged"}, max_redirects=0).status == 403
    headers = {"X-CSRF-Token": "forged"}
    assert page.request.post("/models/train", headers=headers, max_redirects=0).status == 403


def test_a_revoked_key_is_signed_out_at_its_next_request(page: Any, dashboard: Dashboard) -> None:
    key, key_id = new_key(dashboard, ["admin"], "to revoke")
    signed_in(page, key)
    page.goto("/models")
    assert "/models" in page.url
    KeyRing(dashboard.data / "keys.json").revoke(key_id)
    page.goto("/models")
    assert "/signin" in page.url
    page.goto("/")
    assert "/signin" in page.url, "the session ended for good"


def test_signing_out_ends_the_session(page: Any, dashboard: Dashboard) -> None:
    signed_in(page, dashboard.keys["admin"])
    with page.expect_navigation():
        page.click("form.who button")
    assert "/signin" in page.url
    page.goto("/items")
    assert "/signin" in page.url


def _order(page: Any) -> list[str]:
    rows = page.locator("#rec-table tbody tr")
    return [rows.nth(n).get_attribute("data-item") for n in range(rows.count())]


def test_the_alpha_slider_changes_the_order_shown(page: Any, dashboard: Dashboard) -> None:
    signed_in(page, dashboard.keys["admin"])
    page.goto("/customers?user=user-3")
    section = page.locator("#recommendations")

    def slide(value: str) -> list[str]:
        before = section.get_attribute("data-ranked")
        page.locator("#alpha").evaluate(f"e => {{ e.value = '{value}'; e.dispatchEvent(new Event('input')); }}")
        wait_for(lambda: section.get_attribute("data-ranked") not in (None, before))
        return _order(page)

    wait_for(lambda: section.get_attribute("data-ranked") is not None)
    attention = slide("1")
    purchase = slide("0")
    assert len(attention) == len(purchase) == 10
    assert attention != purchase, "alpha 1 ranks by attention, 0 by purchase times value"
    assert page.locator("#alpha-value").inner_text() == "0.00"
    cells = page.locator("#rec-table tbody tr").first.locator("td")
    assert "%" in cells.nth(3).inner_text() and "%" in cells.nth(4).inner_text(), "P(attention), P(purchase)"
    assert cells.nth(6).inner_text().strip(), "each item says why"


def test_an_upload_is_previewed_with_a_suggested_mapping_and_imported_as_a_job(
    page: Any, dashboard: Dashboard, tmp_path: Any
) -> None:
    rows = ["customer,product,action,time", "user-1,item-2,view,2026-01-02T10:00:00Z"]
    rows += ["user-1,item-3,purchase,2026-01-02T10:05:00Z", ",item-3,view,2026-01-02T10:06:00Z"]
    source = tmp_path / "shop-events.csv"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    signed_in(page, dashboard.keys["admin"])
    page.goto("/data")
    page.set_input_files("form#upload input[type=file]", str(source))
    with page.expect_navigation():
        page.click("form#upload button[type=submit]")
    assert "/data/preview" in page.url
    assert page.locator("table#preview tbody tr").count() == 3
    for field, column in (("user_id", "customer"), ("item_id", "product"), ("type", "action"), ("timestamp", "time")):
        assert page.locator(f"select[name=col_{field}]").input_value() == column
    with page.expect_navigation():
        page.click("#import")
    assert "/data?job=" in page.url
    job = page.locator("#job")
    wait_for(lambda: job.get_attribute("data-done") is not None, 60)
    assert job.get_attribute("data-done") == "succeeded", page.locator("#job-status").inner_text()
    report = page.locator("#job-result").inner_text()
    assert '"rows_written": 2' in report and '"rows_rejected": 1' in report
    page.goto("/data")
    assert "shop-events.csv" in page.locator("table#import-log").inner_text()
    assert "user_id" in page.locator("#rejects").inner_text(), "the rejected row and its reason"


def test_an_admin_trains_as_a_job_then_rolls_back_and_promotes(page: Any, dashboard: Dashboard) -> None:
    """Pins a version on the session's server: the pin it found is put back, whatever happens, so the tests
    after it see the server as they would without it."""
    admin = {"Authorization": f"Bearer {dashboard.keys['admin']}"}
    pinned_before = httpx.get(f"{dashboard.url}/v1/admin/models", headers=admin).json()["pinned"]
    signed_in(page, dashboard.keys["admin"])
    try:
        _train_roll_back_and_promote(page, dashboard, admin)
    finally:
        page.goto("/models")
        form = {"csrf": _csrf(page)}
        if pinned_before is None:
            restored = page.request.post("/models/latest", form=form, max_redirects=0)
        else:
            restored = page.request.post("/models/promote", form={**form, "version": pinned_before}, max_redirects=0)
        assert restored.status == 303
        after = httpx.get(f"{dashboard.url}/v1/admin/models", headers=admin).json()
        assert after["pinned"] == pinned_before


def _train_roll_back_and_promote(page: Any, dashboard: Dashboard, admin: dict[str, str]) -> None:
    page.goto("/models")
    before = page.locator("table#bundles tbody tr").count()
    with page.expect_navigation():
        page.click("#train")
    assert "/models?job=" in page.url
    wait_for(lambda: page.locator("#job").count() == 0 or page.locator("#job").get_attribute("data-done"), 180)
    page.wait_for_url("**/models?message=*", timeout=30_000)
    assert page.locator("table#bundles tbody tr").count() == before + 1
    newest = page.locator("table#bundles tbody tr").first
    assert "serving" in newest.inner_text(), "the new bundle is served at once"
    with page.expect_navigation():
        page.click("#rollback")
    assert "Rolled back" in page.locator("p[role=status]").inner_text()
    assert "pinned" in page.locator("table#bundles tbody tr").nth(1).inner_text()
    version = newest.get_attribute("data-version")
    with page.expect_navigation():
        page.locator(f"tr[data-version='{version}'] button.promote").click()
    assert f"serving {version}" in page.locator("p[role=status]").inner_text()
    status = httpx.get(f"{dashboard.url}/v1/admin/models", headers=admin)
    assert status.json()["serving"] == version
