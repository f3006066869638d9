"""Hostile request bodies: JSON nested too deep and ids with invisible characters, on both the fast
path and the framework's, each refusal structured and confined to its own item of a batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shopsense.api.event_body import nesting
from shopsense.domain import BAD_ID, MAX_JSON_DEPTH, TOO_DEEP
from tests.unit.api.conftest import Api
from tests.unit.api.test_fast_paths import framework_only


def _event(event_id: str, user: str = "user-1", item: str = "item-1", **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {"event_id": event_id, "user_id": user, "item_id": item, "type": "view", "timestamp": now, **extra}


def _deep(depth: int) -> str:
    """JSON text of an object nested ``depth`` deep (brackets in its string must not count)."""
    return '{"a":' * (depth - 1) + '{"s": "}]\\"[{"}' + "}" * (depth - 1)


def _with_context(event: dict[str, Any], context: str) -> str:
    return json.dumps(event)[:-1] + f', "context": {context}}}'


def _post(api: Api, body: str) -> Any:
    return api.client.post("/v1/events", content=body.encode(), headers=api.headers("events:write"))


def _history(api: Api, user: str) -> list[dict[str, Any]]:
    got = api.client.get(f"/v1/users/{user}/history", headers=api.headers("recommend:read"))
    events: list[dict[str, Any]] = got.json()["events"]
    return events


def test_nesting_counts_brackets_outside_strings_only() -> None:
    depth, inside = nesting(b'{"a": ["[{\\"\\\\", {"b": "]"}]}')
    assert int(depth.max()) == 3 and int(depth[-1]) == 0
    assert inside.any()


@pytest.mark.parametrize("framework", [False, True])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 10_000])
def test_a_context_nested_too_deep_is_refused_alone(api: Api, framework: bool, depth: int) -> None:
    body = (
        "["
        + ",".join(
            [
                _with_context(_event(f"d{depth}-0"), _deep(MAX_JSON_DEPTH)),
                _with_context(_event(f"d{depth}-1"), _deep(depth)),
                json.dumps(_event(f"d{depth}-2", item="item-2")),
            ]
        )
        + "]"
    )
    single = _with_context(_event(f"d{depth}-3"), _deep(depth))
    if framework:
        with framework_only(api):
            batch, alone = _post(api, body), _post(api, single)
    else:
        batch, alone = _post(api, body), _post(api, single)
    assert batch.status_code == 200
    assert batch.json() == {"accepted": 2, "rejected": [{"index": 1, "field": "context", "reason": TOO_DEEP}]}
    assert alone.status_code == 422
    error = alone.json()["error"]
    assert error["code"] == "invalid_request" and error["details"] == [{"field": "context", "message": TOO_DEEP}]
    stored = {e["event_id"] for e in _history(api, "user-1")}
    assert {f"d{depth}-0", f"d{depth}-2"} <= stored and f"d{depth}-1" not in stored


def test_a_body_broken_after_a_deep_part_is_invalid_json(api: Api) -> None:
    broken = _post(api, "[" + _deep(5000) + ", {")
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("route", ["/v1/users", "/v1/items"])
def test_attributes_nested_too_deep_are_refused_alone(api: Api, route: str) -> None:
    key = "user_id" if route == "/v1/users" else "item_id"
    records = [
        json.dumps({key: "deep-0", "attributes": {"tier": "gold"}}),
        json.dumps({key: "deep-1"})[:-1] + f', "attributes": {_deep(10_000)}}}',
        json.dumps({key: "deep-2"})[:-1] + f', "attributes": {_deep(MAX_JSON_DEPTH + 1)}}}',
    ]
    headers = api.headers("events:write")
    batch = api.client.put(route, content=("[" + ",".join(records) + "]").encode(), headers=headers)
    assert batch.status_code == 200
    assert batch.json()["accepted"] == 1
    assert [(r["index"], r["field"]) for r in batch.json()["rejected"]] == [(1, "attributes"), (2, "attributes")]
    assert TOO_DEEP in batch.json()["rejected"][1]["reason"]
    alone = api.client.put(route, content=records[1].encode(), headers=headers)
    assert alone.status_code == 422 and alone.json()["error"]["details"][0]["field"] == "attributes"


def test_a_deep_body_elsewhere_is_a_structured_client_error(api: Api) -> None:
    deep = api.client.post("/v1/marketing/campaigns", content=_deep(10_000).encode(), headers=api.headers("admin"))
    assert 400 <= deep.status_code < 500 and "error" in deep.json()


BAD_IDS = ["u\x00x", "u\x1fx", "u\x7f", "evil\u202etxt", "u\u2066x\u2069", "u\u200bx", "u\u200dx", "u\u2060", "\ufeffu"]


@pytest.mark.parametrize("framework", [False, True])
@pytest.mark.parametrize("field", ["user_id", "item_id", "event_id", "session_id"])
def test_ids_with_invisible_characters_are_refused_alone(api: Api, framework: bool, field: str) -> None:
    events = [_event(f"ok-{field}-{framework}")]
    events += [{**_event(f"bad-{field}-{i}-{framework}"), field: value} for i, value in enumerate(BAD_IDS)]
    if framework:
        with framework_only(api):
            got = _post(api, json.dumps(events))
    else:
        got = _post(api, json.dumps(events))
    body = got.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == list(range(1, len(BAD_IDS) + 1))
    assert all(r["field"] == field and BAD_ID in r["reason"] for r in body["rejected"])


def test_ids_are_normalised_to_nfc_on_the_way_in(api: Api) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    first = _post(api, json.dumps(_event(f"nfc-{composed}", user=composed)))
    second = _post(api, json.dumps(_event(f"nfc-{decomposed}", user=decomposed)))
    assert first.json()["accepted"] == second.json()["accepted"] == 1
    stored = [e for e in _history(api, composed) if e["event_id"].startswith("nfc-")]
    assert len(stored) == 1, "the decomposed event id is the composed one: a re-sent event"
    users = api.client.put("/v1/users", json={"user_id": decomposed}, headers=api.headers("events:write"))
    assert users.json() == {"accepted": 1, "rejected": []}
    bad_user = api.client.put("/v1/users", json=[{"user_id": "a\u202eb"}], headers=api.headers("events:write"))
    assert bad_user.json()["rejected"][0]["field"] == "user_id"
