"""Dashboard sessions: sign-in, expiry, revocation, CSRF and where sign-in may send you back to."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute

from shopsense.dashboard import session
from shopsense.dashboard.app import PAGE_MODULES
from shopsense.dashboard.deps import PAGES, ScopeCheck, viewer
from shopsense.dashboard.session import SessionBook, csrf_matches, safe_next
from shopsense.services.keys import KeyRing, Scope
from tests.unit.api.conftest import Api
from tests.unit.dashboard.conftest import sign_in


def test_a_session_lasts_its_hours_then_ends(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ring = KeyRing(tmp_path / "keys.json")
    _, record = ring.create("ops", ["admin"])
    book = SessionBook(hours=1)
    session_id, session = book.start(record, now=1000.0)
    assert book.find(session_id, now=1000.0 + 3599) == session
    assert book.find(session_id, now=1000.0 + 3600) is None
    assert book.find(session_id, now=1000.0) is None, "an expired session is forgotten"


def test_revoking_a_key_ends_all_its_sessions_and_no_other(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ring = KeyRing(tmp_path / "keys.json")
    _, gone = ring.create("gone", ["admin"])
    _, kept = ring.create("kept", ["marketing"])
    book = SessionBook(hours=1)
    first, _ = book.start(gone)
    second, _ = book.start(gone)
    other, _ = book.start(kept)
    assert book.check(ring, first) is not None
    ring.revoke(gone.key_id)
    assert book.check(ring, first) is None
    assert book.find(second) is None, "every session of the revoked key ended"
    assert book.check(ring, other) is not None


def test_the_book_keeps_hashes_of_session_ids_never_the_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ring = KeyRing(tmp_path / "keys.json")
    _, record = ring.create("ops", ["admin"])
    book = SessionBook(hours=1)
    session_id, _ = book.start(record)
    assert session_id not in book._sessions


def test_csrf_tokens_compare_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ring = KeyRing(tmp_path / "keys.json")
    _, record = ring.create("ops", ["admin"])
    _, session = SessionBook(hours=1).start(record)
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, None)
    assert not csrf_matches(session, "")
    assert not csrf_matches(session, session.csrf + "x")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/customers?q=1", "/customers?q=1"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_sign_in_sends_you_back_only_to_a_local_path(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_no_session_redirects_to_sign_in_with_the_page_to_come_back_to(dash: Api) -> None:
    answer = dash.client.get("/items?q=mug", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=/items%3Fq%3Dmug"
    assert dash.client.get("/signin").status_code == 200


def test_a_wrong_key_is_refused_and_sets_no_cookie(dash: Api) -> None:
    answer = dash.client.post("/signin", data={"key": "ss_nope_nope"}, follow_redirects=False)
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers


def test_the_cookie_is_httponly_strict_and_expires(dash: Api) -> None:
    answer = dash.client.post("/signin", data={"key": dash.keys["admin"]}, follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=43200" in cookie
    assert dash.keys["admin"].lower() not in cookie


def test_a_post_without_the_csrf_token_is_refused(dash: Api) -> None:
    csrf = sign_in(dash.client, dash.keys["admin"])
    assert dash.client.post("/signout", data={}, follow_redirects=False).status_code == 403
    assert dash.client.post("/signout", data={"csrf": "wrong"}, follow_redirects=False).status_code == 403
    assert dash.client.get("/items", follow_redirects=False).status_code == 200, "still signed in"
    out = dash.client.post("/signout", headers={"X-CSRF-Token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert dash.client.get("/items", follow_redirects=False).status_code == 303, "signed out"


def test_a_revoked_key_is_signed_out_at_its_next_request(dash: Api) -> None:
    sign_in(dash.client, dash.keys["admin"])
    ring = KeyRing(dash.settings.data_dir / "keys.json")
    key_id = dash.keys["admin"].split("_")[1]
    ring.revoke(key_id)
    answer = dash.client.get("/items", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")


def test_the_api_still_wants_its_key_and_ignores_the_cookie(dash: Api) -> None:
    sign_in(dash.client, dash.keys["admin"])
    answer = dash.client.get("/v1/admin/models")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
    assert dash.client.get("/v1/admin/models", headers=dash.headers("admin")).status_code == 200


def test_plotly_is_served_by_the_app_itself(dash: Api) -> None:
    answer = dash.client.get("/static/plotly.min.js")
    assert answer.status_code == 200 and len(answer.content) > 1_000_000
    assert dash.client.get("/static/dashboard.js").status_code == 200


def _depends_on(dependant: Any, call: Any) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


def _scopes(dependant: Any) -> list[Scope]:
    """The scopes the route's scope checks (``deps.require``) ask for."""
    found = [sub.call.scope for sub in dependant.dependencies if isinstance(sub.call, ScopeCheck)]
    return found + [scope for sub in dependant.dependencies for scope in _scopes(sub)]


def _dashboard_routes() -> list[APIRoute]:
    routers = [session.router, *(module.router for module in PAGE_MODULES)]
    return [r for router in routers for r in router.routes if isinstance(r, APIRoute)]


def test_every_dashboard_route_but_sign_in_needs_a_session_and_so_a_csrf_token() -> None:
    routes = _dashboard_routes()
    assert len(routes) > 10
    unguarded = [
        r.path for r in routes if r.path not in {"/signin", "/signout"} and not _depends_on(r.dependant, viewer)
    ]
    assert unguarded == []


def test_every_dashboard_route_checks_a_scope_at_least_its_pages() -> None:
    """A session alone reads nothing: each route names the scope it needs, a read at least its page's (the
    API's scope for the same data), so a key reads through the dashboard only what it may read by the API."""
    page_scope = {path: scope for path, _, scope in PAGES}
    wrong = []
    for route in _dashboard_routes():
        if route.path in {"/signin", "/signout"}:
            continue
        scopes = _scopes(route.dependant)
        page = "/" + route.path.strip("/").split("/")[0].replace("campaign-design", "campaigns")
        needed = page_scope.get(page, page_scope["/"])
        if not scopes or not any(s in (needed, Scope.ADMIN) for s in scopes):
            wrong.append((route.path, sorted(route.methods), scopes, needed))
    assert wrong == []


READS = [
    "/",
    "/items",
    "/customers?user=user-3",
    "/customers/recommendations?user=user-3",
    "/segments",
    "/segments/export.csv",
    "/segments/check?expression=frequency",
    "/segments/clusters",
    "/audiences",
    "/audiences/lookalike.csv?seed=frequency+%3E%3D+1",
    "/audiences/jobs/x",
    "/audiences/jobs/x/export.csv",
    "/campaigns",
    "/campaigns/spring",
    "/campaigns/spring/contacts.csv",
    "/campaign-design?baseline=0.05&n=100",
    "/models",
    "/models/jobs/x",
    "/data",
    "/data/jobs/x",
    "/data/preview?upload=x",
]
"""A read of every dashboard route (its GETs); an ``events:write`` key may open none of them."""


def test_a_write_only_key_signs_in_but_reads_nothing(dash: Api) -> None:
    answer = dash.client.post("/signin", data={"key": dash.keys["events:write"]}, follow_redirects=False)
    assert answer.status_code == 303, "a valid key signs in"
    gets = {r.path for r in _dashboard_routes() if "GET" in r.methods} - {"/signin"}
    tried = {re.sub(r"/(x|spring)\b", "/{}", p.split("?")[0]) for p in READS}
    assert {re.sub(r"\{\w+\}", "{}", path) for path in gets} <= tried, "READS tries every GET route"
    opened = {path: dash.client.get(path, follow_redirects=False).status_code for path in READS}
    assert opened == dict.fromkeys(READS, 403)
    page = dash.client.get("/items")
    assert "lacks the &#39;recommend:read&#39; scope" in page.text
    assert re.search(r"<nav>\s*</nav>", page.text), "an empty nav: no page it may open"


def test_the_nav_shows_a_key_only_the_pages_it_may_open(dash: Api) -> None:
    sign_in(dash.client, dash.keys["recommend:read"])
    page = dash.client.get("/items").text
    shown = set(re.findall(r'<a href="(/[a-z]*)"', page.split("<nav>")[1].split("</nav>")[0]))
    assert shown == {"/", "/items", "/models"}
    assert dash.client.get("/customers?user=user-3").status_code == 403
    assert dash.client.get("/data").status_code == 403


def test_a_marketing_key_signs_in_to_a_page_it_may_open(dash: Api) -> None:
    key, _ = KeyRing(dash.settings.data_dir / "keys.json").create("marketer", ["marketing"])
    answer = dash.client.post("/signin", data={"key": key, "next": "/"}, follow_redirects=False)
    assert answer.headers["location"] == "/customers", "not the overview, which needs recommend:read"
    assert dash.client.get("/").status_code == 403 and dash.client.get("/customers").status_code == 200


def test_a_job_page_shows_only_its_own_kind_of_job(dash: Api) -> None:
    sign_in(dash.client, dash.keys["admin"])
    jobs = dash.client.app.state.shop.jobs  # type: ignore[attr-defined]
    audience = jobs.submit("audience", lambda job: {"secret": "an audience's result"})
    assert dash.client.get(f"/data/jobs/{audience.job_id}").status_code == 404
    assert dash.client.get(f"/models/jobs/{audience.job_id}").status_code == 404
    imported = jobs.submit("import", lambda job: {"rows": 1})
    assert dash.client.get(f"/data/jobs/{imported.job_id}").status_code == 200
    assert dash.client.get(f"/models/jobs/{imported.job_id}").status_code == 404


@pytest.mark.parametrize(("setting", "secure"), [("auto", False), ("always", True), ("never", False)])
def test_the_secure_flag_follows_the_setting(dash: Api, setting: str, secure: bool) -> None:
    settings = dash.client.app.state.shop.settings  # type: ignore[attr-defined]
    dashboard = settings.dashboard.model_copy(update={"secure_cookie": setting})
    dash.client.app.state.shop.settings = settings.model_copy(update={"dashboard": dashboard})  # type: ignore[attr-defined]
    answer = dash.client.post("/signin", data={"key": dash.keys["admin"]}, follow_redirects=False)
    assert ("secure" in answer.headers["set-cookie"].lower()) is secure, "the test client speaks plain http"
