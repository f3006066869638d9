"""What the schema promises holds: invalid bodies and parameters are refused (4xx, naming the field), valid
ones accepted, and ids in paths and query strings follow the same rule as ids in bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shopsense.domain import BAD_ID
from shopsense.services.keys import KeyRing
from tests.unit.api.conftest import Api

NOW = datetime.now(UTC).replace(microsecond=0).isoformat()
CAMPAIGN = {
    "name": "spring",
    "variants": [{"name": "control", "weight": 0.5, "is_control": True}, {"name": "coupon", "weight": 0.5}],
    "channel": "email",
    "start": "2020-01-01T00:00:00Z",
    "end": "2030-01-01T00:00:00Z",
}


def _marketer(api: Api) -> dict[str, str]:
    key, _ = KeyRing(api.settings.data_dir / "keys.json").create("marketer", ["marketing"])
    return {"X-API-Key": key}


def _refused(answer: Any, status: int = 422) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/events", {}, "user_id"),
        ("POST", "/v1/events", {"events": []}, "user_id"),
        ("POST", "/v1/events", {"user_id": "u", "item_id": "i", "type": "view"}, "timestamp"),
        ("PUT", "/v1/items", {}, "item_id"),
        ("PUT", "/v1/items", {"items": []}, "item_id"),
        ("PUT", "/v1/users", {}, "user_id"),
    ],
)
def test_a_single_record_that_is_refused_is_a_422(api: Api, method: str, path: str, body: Any, field: str) -> None:
    error = _refused(api.client.request(method, path, json=body, headers=api.headers("events:write")))
    assert error["code"] == "invalid_request" and error["details"][0]["field"] == field, error


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/events"), ("PUT", "/v1/items"), ("PUT", "/v1/users")])
def test_an_empty_batch_is_a_422_and_a_batch_reports_each_refusal(api: Api, method: str, path: str) -> None:
    headers = api.headers("events:write")
    assert "holds no" in _refused(api.client.request(method, path, json=[], headers=headers))["message"]
    batch = api.client.request(method, path, json=[{}], headers=headers)
    assert batch.status_code == 200 and batch.json()["accepted"] == 0 and batch.json()["rejected"][0]["index"] == 0


@pytest.mark.parametrize("when", [1_700_000_000, "1700000000", 1.7e9])
def test_times_are_iso_strings_with_a_zone(api: Api, when: Any) -> None:
    shown = {"recommendation_id": "r-1", "user_id": "user-1", "item_ids": ["item-1"], "timestamp": when}
    error = _refused(api.client.post("/v1/impressions", json=shown, headers=api.headers("events:write")))
    assert error["details"][0]["field"] == "body.timestamp" and "ISO-8601" in error["message"]
    built = api.client.post("/v1/profiles/build", json={"as_of": when}, headers=_marketer(api))
    assert "ISO-8601" in _refused(built)["message"]


def test_an_unknown_campaign_is_a_404(api: Api) -> None:
    marketer = _marketer(api)
    assert _refused(api.client.get("/v1/campaigns/nope/readout", headers=marketer), 404)["code"] == "not_found"
    assign = api.client.post("/v1/campaigns/nope/assign", json={"user_ids": ["a"]}, headers=marketer)
    assert "nope" in _refused(assign, 404)["message"]
    assert api.client.post("/v1/campaigns", json=CAMPAIGN, headers=marketer).status_code == 200
    unassigned = api.client.get("/v1/campaigns/spring/readout", headers=marketer)
    assert unassigned.status_code == 409 or unassigned.status_code == 400, "known but not ready: not a 404"


def test_no_segments_is_an_empty_report(api: Api) -> None:
    marketer = _marketer(api)
    assert api.client.post("/v1/profiles/build", json={}, headers=marketer).status_code == 202
    for body in ({"segments": {}}, {}):
        answer = api.client.post("/v1/segments", json=body, headers=marketer)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"stats": [], "overlaps": [], "members": {}}


def test_price_bounds_of_zero_count_and_crossed_bounds_are_refused(api: Api) -> None:
    headers = api.headers("recommend:read")
    free = api.client.get("/v1/recommendations", params={"user_id": "user-1", "max_price": 0}, headers=headers)
    assert free.status_code == 200 and free.json()["items"] == [], "no item of the shop is free"
    crossed = api.client.get(
        "/v1/recommendations", params={"user_id": "user-1", "min_price": 5, "max_price": 0}, headers=headers
    )
    error = _refused(crossed)
    assert error["details"][0]["field"] == "query.max_price" and "min_price" in error["message"]


BAD = "a\u202eb"
COMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"


@pytest.mark.parametrize(
    ("scope", "method", "path", "params", "field"),
    [
        ("recommend:read", "GET", "/v1/recommendations", {"user_id": BAD}, "query.user_id"),
        ("recommend:read", "GET", f"/v1/users/{BAD}/history", {}, "path.user_id"),
        ("admin", "GET", f"/v1/users/{BAD}/export", {}, "path.user_id"),
        ("admin", "DELETE", f"/v1/users/{BAD}", {}, "path.user_id"),
        ("recommend:read", "GET", f"/v1/items/{BAD}/similar", {}, "path.item_id"),
        ("admin", "GET", f"/v1/profiles/{BAD}", {}, "path.user_id"),
        ("admin", "GET", f"/v1/campaigns/{BAD}/readout", {}, "path.name"),
        ("admin", "GET", f"/v1/jobs/{BAD}", {}, "path.job_id"),
    ],
)
def test_ids_in_paths_and_queries_are_refused_naming_the_parameter(
    api: Api, scope: str, method: str, path: str, params: dict[str, str], field: str
) -> None:
    error = _refused(api.client.request(method, path, params=params, headers=api.headers(scope)))
    assert error["details"][0]["field"] == field and BAD_ID in error["message"], error


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/segments", {"segments": {BAD: "frequency >= 1"}}, "segments"),
        ("/v1/campaigns/spring/assign", {"user_ids": ["ok", BAD]}, "user_ids"),
        ("/v1/impressions", {"recommendation_id": "r", "user_id": BAD, "item_ids": ["item-1"]}, "user_id"),
        ("/v1/audiences", {"target": {"category": "Home"}, "contacted": [BAD]}, "contacted"),
    ],
)
def test_ids_and_names_in_bodies_are_refused(api: Api, path: str, body: dict[str, Any], field: str) -> None:
    error = _refused(api.client.post(path, json=body, headers=api.headers("admin")))
    assert field in error["details"][0]["field"] and BAD_ID in error["message"], error


def test_a_campaign_name_follows_the_rule_of_ids(api: Api) -> None:
    marketer = _marketer(api)
    bad = api.client.post("/v1/campaigns", json={**CAMPAIGN, "name": BAD}, headers=marketer)
    assert "name" in _refused(bad, 400)["message"] and BAD_ID in bad.json()["error"]["message"]
    decomposed = api.client.post("/v1/campaigns", json={**CAMPAIGN, "name": DECOMPOSED}, headers=marketer)
    assert decomposed.status_code == 200 and decomposed.json()["name"] == COMPOSED
    assign = api.client.post(f"/v1/campaigns/{COMPOSED}/assign", json={"user_ids": ["a"]}, headers=marketer)
    assert assign.status_code == 200, assign.text


def test_composed_and_decomposed_ids_are_one_user_in_paths_and_queries(api: Api) -> None:
    event = {"user_id": DECOMPOSED, "item_id": "item-1", "type": "view", "timestamp": NOW}
    assert api.client.post("/v1/events", json=[event], headers=api.headers("events:write")).json()["accepted"] == 1
    reader = api.headers("recommend:read")
    for user in (COMPOSED, DECOMPOSED):
        history = api.client.get(f"/v1/users/{user}/history", headers=reader)
        assert history.status_code == 200 and history.json()["user_id"] == COMPOSED, history.text
        recs = api.client.get("/v1/recommendations", params={"user_id": user}, headers=reader)
        assert recs.status_code == 200 and recs.json()["user_id"] == COMPOSED


def test_an_event_time_given_as_a_number_is_refused(api: Api) -> None:
    headers = api.headers("events:write")
    number = {"user_id": "u", "item_id": "item-1", "type": "view", "timestamp": 1_700_000_000}
    assert "ISO-8601" in _refused(api.client.post("/v1/events", json=number, headers=headers))["message"]
    good = {**number, "timestamp": NOW}
    batch = api.client.post("/v1/events", json=[good, number, {**number, "timestamp": 1.7e12}], headers=headers)
    assert batch.json()["accepted"] == 1
    assert [(r["index"], r["field"]) for r in batch.json()["rejected"]] == [(1, "timestamp"), (2, "timestamp")]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/items", {"item_id": "x", "price": "5"}, "price"),
        ("/v1/items", {"item_id": "x", "available": 1}, "available"),
        ("/v1/items", {"item_id": "x", "stock": True}, "stock"),
        ("/v1/items", {"item_id": "x", "first_seen": 1_700_000_000}, "first_seen"),
        ("/v1/users", {"user_id": "x", "first_seen": "1700000000"}, "first_seen"),
        ("/v1/events", {"user_id": "u", "item_id": "i", "type": "view", "timestamp": NOW, "value": "5"}, "value"),
        ("/v1/segments", {"rfm": True, "members": False}, "members"),
        ("/v1/segments", {"rfm": 1}, "rfm"),
        ("/v1/audiences", {"target": {"category": "Home"}, "limit": "10"}, "limit"),
    ],
)
def test_values_are_taken_as_their_json_type_not_converted(
    api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    method = "PUT" if path in ("/v1/items", "/v1/users") else "POST"
    error = _refused(api.client.request(method, path, json=body, headers=api.headers("admin")))
    assert error["details"][0]["field"].endswith(field), error


def test_a_well_formed_event_a_setting_refuses_is_a_400(api: Api) -> None:
    event = {"user_id": "u", "item_id": "item-1", "type": "teleport", "timestamp": NOW}
    error = _refused(api.client.post("/v1/events", json=event, headers=api.headers("events:write")), 400)
    assert error["details"][0]["field"] == "type" and "unknown event type" in error["message"]
