"""shopsense.client against a scripted transport: what it retries, what it re-sends, what it raises."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from shopsense.client import Client, ClientError

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, **options: Any) -> Client:
    options = {"backoff": 0.001, "max_backoff": 0.002, **options}
    return Client("http://shop.test", "ss_key_secret", transport=httpx.MockTransport(handler), **options)


def _error(status: int, code: str, message: str = "no") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "details": []}})


def test_a_batch_resent_after_failures_keeps_the_event_ids_it_was_first_sent_with() -> None:
    bodies: list[list[dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            raise httpx.ReadError("connection reset", request=request)  # the answer was lost
        if len(bodies) == 2:
            return _error(503, "not_ready")
        return httpx.Response(200, json={"accepted": len(bodies[-1]), "rejected": []})

    with _client(handler) as client:
        report = client.send_events(
            [
                {"user_id": "u1", "item_id": "i1", "type": "view"},
                {"user_id": "u2", "item_id": "i1", "type": "view", "event_id": "mine"},
            ]
        )
    assert report.accepted == 2 and report.retries == 2
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2], "the same ids and times every attempt"
    assert bodies[0][1]["event_id"] == "mine" and len(bodies[0][0]["event_id"]) == 32
    assert all("timestamp" in event for event in bodies[0])


def test_batches_are_cut_to_size_and_rejections_name_the_callers_index() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        batch = json.loads(request.content)
        sizes.append(len(batch))
        rejected = [
            {"index": i, "field": "type", "reason": "unknown type"} for i, e in enumerate(batch) if e["type"] == "x"
        ]
        return httpx.Response(200, json={"accepted": len(batch) - len(rejected), "rejected": rejected})

    events = [{"user_id": "u", "item_id": "i", "type": "x" if n == 7 else "view"} for n in range(10)]
    with _client(handler) as client:
        report = client.send_events(events, batch_size=4)
    assert sizes == [4, 4, 2]
    assert report.accepted == 9 and [r["index"] for r in report.rejected] == [7]


def test_rate_limited_requests_wait_as_told_then_go_through() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(0)
        if len(calls) < 3:
            return httpx.Response(
                429, headers={"Retry-After": "0.01"}, json={"error": {"code": "rate_limited", "message": "slow down"}}
            )
        return httpx.Response(200, json={"user_id": "u1", "items": []})

    with _client(handler) as client:
        assert client.recommend("u1", k=3)["user_id"] == "u1"
    assert len(calls) == 3


def test_a_client_error_is_raised_at_once_with_the_servers_code_and_details() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {
            "error": {
                "code": "invalid_request",
                "message": "bad query",
                "details": [{"field": "query.k", "message": "too big"}],
            }
        }
        return httpx.Response(400, json=body)

    with _client(handler) as client, pytest.raises(ClientError, match=r"400 bad query \(query.k: too big\)") as caught:
        client.recommend("u1", k=10_000)
    assert caught.value.status == 400 and caught.value.code == "invalid_request"
    assert len(calls) == 1, "a 4xx is the caller's mistake: sending it again changes nothing"


def test_retries_stop_after_the_limit_with_the_last_failure() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return _error(500, "internal", "boom")

    with _client(handler, retries=3) as client, pytest.raises(ClientError, match="500 boom") as caught:
        client.send_events([{"user_id": "u", "item_id": "i", "type": "view"}])
    assert len(calls) == 4 and caught.value.status == 500


def test_a_write_that_is_not_idempotent_is_retried_only_when_it_surely_was_not_processed() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)  # never reached the server: safe to send again
        if len(calls) == 2:
            return _error(500, "internal")  # may have been written: sending again could count it twice
        return httpx.Response(200, json={"accepted": 2, "rejected": []})

    with _client(handler) as client, pytest.raises(ClientError, match="500"):
        client.record_impressions("r1", "u1", ["i1", "i2"])
    assert calls == ["/v1/impressions", "/v1/impressions"]


def test_ids_travel_as_one_path_segment() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"user_id": "a/b?c", "events": []})

    with _client(handler) as client:
        client.history("a/b?c%", limit=5)
    assert paths == ["/v1/users/a%2Fb%3Fc%25/history?limit=5"]


def test_the_deadline_bounds_a_call_over_all_its_attempts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, headers={"Retry-After": "5"}, json={"error": {"code": "rate_limited", "message": "later"}}
        )

    with _client(handler, deadline=1.0) as client, pytest.raises(ClientError, match="429"):
        client.recommend("u1")
