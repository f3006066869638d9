"""The dashboard in a real browser: Playwright driving Debian's Chromium against a real ``shopsense serve``.

Fixtures (every browser test may use them):

- ``dashboard``: one server for the session (:class:`Dashboard`: ``url``, ``data``, ``keys`` by role), over a
  copy of the trained synthetic shop (tests/conftest.py ``trained``: 400 customers, 120 items, 20,000
  events with views, carts and purchases over 60 days), its customer profiles built, and a few
  impressions recorded (so the models page has online numbers). Keys: ``admin``, ``marketing`` and
  ``readonly`` (``recommend:read``). ``new_key(dashboard, scopes)`` makes another (e.g. one to revoke).
- ``page``: a fresh browser context on the server (``page.goto("/items")``), failing the test at its end on
  any console error, uncaught page error, failed request or 5xx answer. A test that provokes one on purpose
  (a 403) says so first: ``problems.allow("403")``.
- ``signed_in(page, key)``: signs ``page`` in through the form and waits for the overview.

Chromium is ``/usr/bin/chromium`` (``make`` installs Debian's package when it is missing and it runs as
root); ``playwright install`` is never used. Without Chromium or the playwright package the tests skip with
one line, and fail under ``CI=true`` (as tests/postgres.py does for PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopsense.services.keys import KeyRing
from shopsense.settings import load_settings
from tests.postgres import in_ci
from tests.servers import ServerProcess

CHROMIUM = Path(os.environ.get("SHOPSENSE_CHROMIUM", "/usr/bin/chromium"))
NAV_TIMEOUT_MS = 30_000


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium; never `playwright install`)"
    return None


def _require_browser() -> None:
    problem = _missing()
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"CI=true needs the browser tests' browser: {problem}", pytrace=False)
    print(f"\n*** BROWSER TESTS SKIPPED: {problem} ***", file=sys.stderr)
    pytest.skip(f"browser tests skipped: {problem}")


@dataclass
class Dashboard:
    """A running ``shopsense serve`` and its keys by role."""

    server: ServerProcess
    data: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url


def new_key(dashboard: Dashboard, scopes: list[str], name: str = "browser test") -> tuple[str, str]:
    """A new key for ``dashboard``: (the key, its id)."""
    key, record = KeyRing(dashboard.data / "keys.json").create(name, scopes)
    return key, record.key_id


@pytest.fixture(scope="package")  # its server stops once the browser tests are done
def dashboard(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    _require_browser()
    data = tmp_path_factory.mktemp("dashboard") / "data"
    shutil.copytree(trained, data)
    _build_profiles(data)
    ring = KeyRing(data / "keys.json")
    keys = {
        "admin": ring.create("browser admin", ["admin"])[0],
        "marketing": ring.create("browser marketer", ["marketing", "recommend:read"])[0],
        "readonly": ring.create("browser read-only", ["recommend:read"])[0],
    }
    server = ServerProcess({**os.environ, "SHOPSENSE_DATA_DIR": str(data)})
    server.start()
    try:
        _show_recommendations(server.url, keys["admin"])
        yield Dashboard(server, data, keys)
    finally:
        server.stop()


def _build_profiles(data: Path) -> None:
    from shopsense.services.shop import Shop

    with Shop(load_settings(None, data_dir=data)) as shop:
        shop.marketing.build_profiles()


def _show_recommendations(url: str, key: str) -> None:
    """Record impressions of a few users' recommendations, as a shop front would."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for n in range(10):
            answer = client.get("/v1/recommendations", params={"user_id": f"user-{n}", "k": 5}).json()
            shown = {
                "recommendation_id": answer["recommendation_id"],
                "user_id": f"user-{n}",
                "item_ids": [i["item_id"] for i in answer["items"]],
            }
            client.post("/v1/impressions", json=shown).raise_for_status()


@dataclass
class Problems:
    """What went wrong in the page: console errors, page errors, failed requests, 5xx answers."""

    seen: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, fragment: str) -> None:
        """Expect problems whose text contains ``fragment`` (a 403 provoked on purpose)."""
        self.allowed.append(fragment)

    def add(self, text: str) -> None:
        self.seen.append(text)

    def unexpected(self) -> list[str]:
        return [p for p in self.seen if not any(a in p for a in self.allowed)]


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Chromium through Playwright's sync API, for the browser tests only: that API keeps an event loop
    running on the main thread until it stops, and every later ``asyncio.run`` in the session would fail."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.fixture
def page(browser: Any, dashboard: Dashboard, problems: Problems) -> Iterator[Any]:
    context = browser.new_context(base_url=dashboard.url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(NAV_TIMEOUT_MS)
    tab = context.new_page()
    tab.on("console", lambda m: problems.add(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.add(f"page error: {e}"))
    tab.on("requestfailed", lambda r: _failed(problems, r))
    tab.on("response", lambda r: problems.add(f"{r.status} from {r.url}") if r.status >= 500 else None)
    yield tab
    context.close()
    unexpected = problems.unexpected()
    assert not unexpected, f"the page had problems: {unexpected}"


def _failed(problems: Problems, request: Any) -> None:
    """A request that failed; not one the browser cancelled because the page navigated on (ERR_ABORTED)."""
    if "ERR_ABORTED" not in str(request.failure):
        problems.add(f"request failed: {request.method} {request.url} {request.failure}")


def signed_in(page: Any, key: str, next_path: str = "/") -> Any:
    """Sign ``page`` in with ``key`` through the form; back on ``next_path`` once it loaded."""
    page.goto(f"/signin?next={next_path}")
    page.fill("input[name=key]", key)
    with page.expect_navigation():
        page.click("form[action='/signin'] button[type=submit]")
    assert "/signin" not in page.url, page.content()[:2000]
    return page


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``check`` until it holds (a job finishing, a page updating)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout_s}s")
