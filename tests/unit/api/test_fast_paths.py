"""Routes answered past the framework: the same keys, refusals, metrics and answers as through it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from shopsense.api.fast_paths import FastPaths
from tests.unit.api.conftest import Api


def _event(user: str, item: str) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "type": "view", "timestamp": datetime.now(UTC).isoformat()}


@contextmanager
def framework_only(api: Api) -> Iterator[None]:
    """Requests inside go through FastAPI's routing and dependencies, as if there were no fast paths."""
    layer: Any = api.client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, FastPaths):
        layer = layer.app
    routes, layer.routes = layer.routes, {}
    try:
        yield
    finally:
        layer.routes = routes


def test_events_route_checks_keys_and_answers_errors_like_every_route(api: Api) -> None:
    client, event = api.client, {**_event("user-1", "item-1"), "event_id": "fast-1"}
    missing = client.post("/v1/events", json=event)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthenticated"
    assert missing.headers["www-authenticate"] == "Bearer"
    forbidden = client.post("/v1/events", json=event, headers=api.headers("recommend:read"))
    assert forbidden.status_code == 403 and "events:write" in forbidden.json()["error"]["message"]
    garbled = client.post("/v1/events", content=b'{"user_id": ', headers=api.headers("events:write"))
    assert garbled.status_code == 422 and "not valid JSON" in garbled.json()["error"]["message"]
    empty = client.post("/v1/events", json=[], headers=api.headers("events:write"))
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "invalid_request"
    assert client.post("/v1/events", json=event, headers=api.headers("admin")).json() == {"accepted": 1, "rejected": []}
    assert client.get("/v1/events", headers=api.headers("admin")).status_code == 405, "other methods still route"
    metrics = client.get("/metrics").text
    assert 'shopsense_requests_total{method="POST",route="/v1/events",status="401"} 1.0' in metrics
    assert 'shopsense_requests_total{method="POST",route="/v1/events",status="200"} 1.0' in metrics


QUERIES = [
    "user_id=user-1",
    "user_id=user-2&k=3&alpha=0.2&diversity=0.5&channel=app",
    "user_id=user-3&category=c1&category=c2&exclude_category=c3&brand=b1&min_price=1&max_price=500&k=5",
    "user_id=nobody-knows-me&k=4",
    "user_id=somebody&user_id=user-4&k=2",  # the last of a repeated parameter, as the framework reads it
    "user_id=user-5&k=3&unknown=1",
    "user_id=user-1&k=0",
    "user_id=&k=3",
    "k=3",
    "user_id=user-1&k=abc&alpha=2&diversity=-1",
    "user_id=user-1&k=",
    "user_id=user-1&channel=" + "x" * 33,
    "user_id=user-1&" + "&".join(f"category=c{i}" for i in range(21)),
    "user_id=user-1&min_price=nan",
]


@pytest.mark.parametrize("query", QUERIES)
def test_recommendations_answer_and_refuse_as_through_the_framework(api: Api, query: str) -> None:
    """Every parameter read, validated and refused in the same words; the same items for the same user."""

    def get() -> tuple[int, Any]:
        response = api.client.get(f"/v1/recommendations?{query}", headers=api.headers("recommend:read"))
        body = response.json()
        body.pop("recommendation_id", None)  # new for every answer
        return response.status_code, body

    get()  # the first computes; after it both paths answer from the cache
    fast = get()
    with framework_only(api):
        framework = get()
    assert fast == framework
    if "user_id=user-1&k=" in query or query == "k=3":
        assert fast[0] == 422 and fast[1]["error"]["details"][0]["field"].startswith("query.")


def test_recommendations_check_keys_first_and_count_in_metrics(api: Api) -> None:
    client = api.client
    missing = client.get("/v1/recommendations?k=0")
    assert missing.status_code == 401, "the key is checked before the parameters, as the framework does"
    forbidden = client.get("/v1/recommendations?user_id=user-1", headers=api.headers("events:write"))
    assert forbidden.status_code == 403 and "recommend:read" in forbidden.json()["error"]["message"]
    assert client.post("/v1/recommendations?user_id=user-1", headers=api.headers("admin")).status_code == 405
    assert client.get("/v1/recommendations?user_id=user-1", headers=api.headers("admin")).status_code == 200
    metrics = client.get("/metrics").text
    assert 'shopsense_requests_total{method="GET",route="/v1/recommendations",status="401"} 1.0' in metrics
    assert 'shopsense_requests_total{method="GET",route="/v1/recommendations",status="200"} 1.0' in metrics
