"""The API holds no store access, SQL, ranking or model code: it calls services/ through the app's Shop.

A scan of the source of every module under ``src/shopsense/api`` (comments left out, strings kept:
SQL lives in strings), and a check that the routes really reach state through the shop.
"""

from __future__ import annotations

import io
import re
import tokenize
from concurrent.futures import Future
from pathlib import Path

import pytest

from shopsense.services.serving import ServingService
from tests.unit.api.conftest import Api

API = Path(__file__).resolve().parents[3] / "src" / "shopsense" / "api"

FORBIDDEN = {
    "a store call on the writer thread": re.compile(r"\bwriter\s*\.\s*call\b"),
    "an event scan": re.compile(r"\bscan_events\b"),
    "the store itself": re.compile(r"\.\s*store\b(?!\s*import)|\bopen_store\b"),
    "SQL": re.compile(
        r"\b(SELECT\s|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|CREATE\s+TABLE|WITH\s+\w+\s+AS\s*\()"
    ),
    "a database driver": re.compile(r"^\s*(import|from)\s+(duckdb|psycopg\w*|sqlalchemy|sqlite3)\b", re.M),
    "store, ranking, model or feature code": re.compile(
        r"^\s*(import|from)\s+shopsense\.(store|ranking|models|features|pipeline)\b", re.M
    ),
    "state reached around the shop": re.compile(r"\bstate\s*\.\s*(service|keys)\b"),
}


def violations(source: str) -> list[str]:
    """What in ``source`` breaks the layering, one line per finding (``what: line``)."""
    code = _without_comments(source)
    found = []
    for what, pattern in FORBIDDEN.items():
        for match in pattern.finditer(code):
            line = code.count("\n", 0, match.start()) + 1
            found.append(f"{what}: line {line}: {code.splitlines()[line - 1].strip()}")
    return found


def _without_comments(source: str) -> str:
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT]
    return tokenize.untokenize(tokens)


def test_no_api_module_touches_the_store_or_holds_sql() -> None:
    modules = sorted(API.rglob("*.py"))
    assert len(modules) > 10 and API / "routes" / "users.py" in modules, "the scan sees the routes"
    found = {str(m.relative_to(API)): v for m in modules if (v := violations(m.read_text(encoding="utf-8")))}
    assert found == {}, "move this work into a service method (services/), reached through the Shop"


@pytest.mark.parametrize(
    "source",
    [
        "events = await asyncio.wrap_future(svc.writer.call(lambda store: store.scan_events(user_ids=[u])))",
        "rows = svc.store.user_record(user_id)",
        "x = svc.writer .call(read)",
        'con.execute("SELECT * FROM events WHERE user_id = ?", [u])',
        'sql = "DELETE FROM users WHERE user_id = ?"',
        "from shopsense.store.base import Store",
        "import duckdb",
        "from shopsense.ranking.rules import Rules",
        "svc: ServingService = request.app.state.service",
    ],
)
def test_the_scan_catches_what_the_routes_used_to_do(source: str) -> None:
    assert violations(source)


@pytest.mark.parametrize(
    "source",
    [
        "# the store is read on the writer thread: writer.call(...) SELECT\nx = 1",
        '"""Erase a user: events, impressions and record in the store."""',
        'allow_methods=["GET", "POST", "PUT", "DELETE"]',
        "rows = await asyncio.wrap_future(svc.user_history(user_id, limit))",
        "from shopsense.services.marketing import MarketingService",
    ],
)
def test_the_scan_passes_prose_and_service_calls(source: str) -> None:
    assert violations(source) == []


def test_routes_reach_the_service_through_the_apps_shop(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A route answers with what the shop's service gives: no other path to the state exists."""
    shop = api.client.app.state.shop  # type: ignore[attr-defined]
    serving: ServingService = shop.serving()
    assert shop.serving() is serving
    assert not hasattr(api.client.app.state, "service"), "one way in: app.state.shop"  # type: ignore[attr-defined]
    answered: Future[list[dict[str, object]] | None] = Future()
    answered.set_result(None)
    monkeypatch.setattr(serving, "user_history", lambda user_id, limit: answered)
    reply = api.client.get("/v1/users/user-1/history", headers=api.headers("recommend:read"))
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
