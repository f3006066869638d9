"""The key is checked before any body is read: a keyless or under-scoped request costs no parsing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute

from shopsense.api.app import ROUTERS
from shopsense.api.deps import Required
from tests.unit.api.conftest import Api

BODY = b'{"events": [' + b"[" * 5000  # malformed and deep: parsing it would give a 422, not a 401


def _keyed() -> list[tuple[str, str, str]]:
    """(method, path with its parameters filled, scope) of every route that requires a key."""
    found = []
    for route in (route for router in ROUTERS for route in router.routes):
        if not isinstance(route, APIRoute):
            continue
        scopes = [d.call.scope.value for d in route.dependant.dependencies if isinstance(d.call, Required)]
        for method in route.methods:
            if scopes:
                found.append((method, re.sub(r"\{[^}]+\}", "x", route.path), scopes[0]))
    return found


class Untouchable:
    """A request body that counts how many times anyone pulls a chunk of it."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> Iterator[bytes]:
        for _ in range(200):  # 200 chunks of BODY: about a megabyte, streamed
            self.reads += 1
            yield BODY


def test_every_keyed_route_refuses_before_reading_the_body(api: Api) -> None:
    routes = _keyed()
    assert {m for m, _, _ in routes} >= {"GET", "POST", "PUT", "DELETE"} and len(routes) >= 20
    wrong_scope = {"events:write": "recommend:read", "recommend:read": "events:write"}
    for method, path, scope in routes:
        other = wrong_scope.get(scope, "events:write")
        cases = [({}, 401), ({"X-API-Key": "junk"}, 401), (api.headers(other), 403)]
        for headers, status in cases:
            body = Untouchable()
            answer = api.client.request(method, path, content=body(), headers=headers)
            assert answer.status_code == status, (method, path, headers, answer.text)
            code = "unauthenticated" if status == 401 else "forbidden"
            assert answer.json()["error"]["code"] == code
            assert body.reads == 0, f"{method} {path} read the body of a request it refused"


BODY_ROUTES = [
    ("POST", "/v1/events"),
    ("PUT", "/v1/items"),
    ("PUT", "/v1/users"),
    ("POST", "/v1/impressions"),
    ("POST", "/v1/profiles/build"),
    ("POST", "/v1/segments"),
    ("POST", "/v1/campaigns"),
    ("POST", "/v1/campaigns/spring/assign"),
    ("POST", "/v1/audiences"),
    ("POST", "/v1/models/train"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_a_keyless_malformed_body_is_401_not_422(api: Api, method: str, path: str) -> None:
    answer = api.client.request(method, path, content=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", answer.text


def test_an_admitted_request_is_checked_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    check = Required.check

    async def counted(self: Required, request: object) -> object:
        calls.append(self.scope)
        return await check(self, request)  # type: ignore[arg-type]

    monkeypatch.setattr(Required, "check", counted)
    answer = api.client.put("/v1/items", json=[{"item_id": "fresh"}], headers=api.headers("events:write"))
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert len(calls) == 1
    calls.clear()
    assert api.client.get("/v1/jobs", headers=api.headers("admin")).status_code == 200
    assert len(calls) == 1
