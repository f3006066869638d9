"""The REST API through the app: auth, writes, real-time recommendations, impressions, erasure, models."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shopsense.api.schemas import RecommendationResponse
from shopsense.domain import RecordKind
from shopsense.ingest.importer import id_key_sql
from shopsense.services.bundles import Bundles
from shopsense.services.keys import KeyRing
from tests.unit.api.conftest import Api, make_api

NOW = datetime.now(UTC).replace(microsecond=0)


def _event(user: str, item: str, kind: str = "view", **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "type": kind, "timestamp": NOW.isoformat(), **extra}


def _recs(api: Api, user: str, **params: Any) -> dict[str, Any]:
    response = api.client.get(
        "/v1/recommendations", params={"user_id": user, **params}, headers=api.headers("recommend:read")
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _post(api: Api, body: Any, scope: str = "events:write") -> Any:
    return api.client.post("/v1/events", json=body, headers=api.headers(scope))


def test_probes_and_metrics(api: Api) -> None:
    assert api.client.get("/health").json() == {"status": "ok"}
    ready = api.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["model_version"]
    _recs(api, "user-1")
    metrics = api.client.get("/metrics").text
    assert 'shopsense_requests_total{method="GET",route="/v1/recommendations",status="200"} 1.0' in metrics
    assert "shopsense_request_seconds_bucket" in metrics
    assert 'shopsense_memory_held{what="cache_entries"}' in metrics
    assert 'shopsense_memory_held{what="events"}' in metrics


def test_keys_401_403_and_revocation(api: Api) -> None:
    client = api.client
    missing = client.get("/v1/recommendations", params={"user_id": "user-1"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthenticated"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.get("/v1/recommendations", params={"user_id": "user-1"}, headers={"X-API-Key": "ss_nope_nope"})
    assert wrong.status_code == 401
    forbidden = client.get("/v1/recommendations", params={"user_id": "user-1"}, headers=api.headers("events:write"))
    assert forbidden.status_code == 403 and "recommend:read" in forbidden.json()["error"]["message"]
    assert client.get("/v1/recommendations", params={"user_id": "u"}, headers=api.headers("admin")).status_code == 200
    reader = api.headers("recommend:read")
    assert client.get("/v1/recommendations", params={"user_id": "u"}, headers=reader).status_code == 200
    tampered = {
        "Authorization": reader["Authorization"][:-2] + ("xy" if not reader["Authorization"].endswith("xy") else "zz")
    }
    assert client.get("/v1/recommendations", params={"user_id": "u"}, headers=tampered).status_code == 401
    ring = KeyRing(api.settings.data_dir / "keys.json")
    key_id = api.keys["recommend:read"].split("_")[1]
    ring.revoke(key_id)  # the server has just verified (and remembered) this key
    revoked = client.get("/v1/recommendations", params={"user_id": "user-1"}, headers=api.headers("recommend:read"))
    assert revoked.status_code == 401, "a revocation from the CLI applies to the running server's next request"
    stored = (api.settings.data_dir / "keys.json").read_text()
    assert api.keys["admin"].split("_", 2)[2] not in stored, "secrets are never stored, only their hashes"


def test_batch_reports_each_rejected_item_and_commits_the_rest(api: Api) -> None:
    batch = [
        _event("user-1", "item-1", event_id="e-1"),
        _event("user-1", "item-2", kind="teleport"),
        {"user_id": "user-1", "item_id": "item-3", "type": "view", "timestamp": "2024-01-01T00:00:00"},
        _event("user-1", "item-4", kind="add_to_cart", channel="app"),
        _event("user-1", "item-5", channel="fax"),
        _event("user-1", "item-6", quantity=-2),
    ]
    body = _post(api, batch).json()
    assert body["accepted"] == 2
    reasons = {r["index"]: (r["field"], r["reason"]) for r in body["rejected"]}
    assert set(reasons) == {1, 2, 4, 5}
    assert reasons[1][0] == "type" and "teleport" in reasons[1][1]
    assert reasons[2][0] == "timestamp" and "time zone" in reasons[2][1]
    assert reasons[4][0] == "channel"
    assert reasons[5][0] == "quantity"
    history = api.client.get("/v1/users/user-1/history", headers=api.headers("recommend:read")).json()["events"]
    newest = {(e["item_id"], e["type"]) for e in history[:2]}
    assert newest == {("item-1", "view"), ("item-4", "cart")}, "aliases are mapped; accepted events are stored"
    again = _post(api, batch[0]).json()
    assert again["accepted"] == 1
    history = api.client.get("/v1/users/user-1/history", headers=api.headers("recommend:read")).json()["events"]
    assert sum(e["event_id"] == "e-1" for e in history) == 1, "a re-sent event_id is stored once"


def test_limits_give_413_and_structured_422(trained: Path, tmp_path: Path) -> None:
    shutil.copytree(trained, tmp_path / "d")
    for api in make_api(tmp_path / "d", max_batch=3, max_body_bytes=2048):
        too_many = _post(api, [_event("user-1", "item-1")] * 4)
        assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "batch_too_large"
        huge = _post(api, [_event("user-1", "x" * 200)] * 3 + [{"pad": "y" * 3000}])
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
        bad = api.client.get(
            "/v1/recommendations", params={"user_id": "user-1", "k": 0}, headers=api.headers("recommend:read")
        )
        assert bad.status_code == 422
        error = bad.json()["error"]
        assert error["code"] == "invalid_request" and error["details"][0]["field"] == "query.k"


def test_rate_limit_gives_429_with_retry_after(trained: Path, tmp_path: Path) -> None:
    shutil.copytree(trained, tmp_path / "d")
    for api in make_api(tmp_path / "d", rate_per_second=0.5, rate_burst=2):
        statuses = [api.client.get("/v1/users/user-1/history", headers=api.headers("admin")).status_code for _ in "abc"]
        assert statuses == [200, 200, 429]
        limited = api.client.get("/v1/users/user-1/history", headers=api.headers("admin"))
        assert limited.headers["retry-after"] == "2" and limited.json()["error"]["code"] == "rate_limited"
        other = api.client.get("/v1/users/user-1/history", headers=api.headers("recommend:read"))
        assert other.status_code == 200, "the limit is per key"


def test_a_posted_event_changes_the_next_recommendation(api: Api) -> None:
    before = _recs(api, "newcomer", k=10)
    assert {s for item in before["items"] for s in item["sources"]} == {"trending"}
    again = _recs(api, "newcomer", k=10)
    assert again["cached"] and again["items"] == before["items"]
    assert _post(api, _event("newcomer", "item-7", kind="cart"))
    after = _recs(api, "newcomer", k=10)
    assert not after["cached"]
    personal = {s for item in after["items"] for s in item["sources"]} - {"trending"}
    assert personal, "the cart event made personal sources (co-bought, taste) propose items"
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]


def test_rules_from_query_parameters(api: Api) -> None:
    items = _recs(api, "user-3", k=20)["items"]
    department = items[0]["title"].split(" ")[0]
    only = _recs(api, "user-3", k=5, category=department)["items"]
    assert only and all(i["title"].startswith(department) for i in only)
    assert _recs(api, "user-3", k=5, category="No Such Aisle")["items"] == []
    bad = api.client.get(
        "/v1/recommendations",
        params={"user_id": "user-3", "min_price": 10, "max_price": 1},
        headers=api.headers("recommend:read"),
    )
    assert bad.status_code == 422 and "min_price" in bad.json()["error"]["message"]


def test_unavailable_item_disappears_at_once(api: Api) -> None:
    first = _recs(api, "user-3", k=5)["items"][0]["item_id"]
    update = api.client.put(
        "/v1/items", json=[{"item_id": first, "available": False}, {"item_id": ""}], headers=api.headers("admin")
    )
    assert update.json()["accepted"] == 1 and update.json()["rejected"][0]["index"] == 1
    assert first not in {i["item_id"] for i in _recs(api, "user-3", k=20)["items"]}


def test_a_restarted_server_serves_the_shelf_as_it_is_now(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    servers = make_api(data)
    api = next(servers)
    first = _recs(api, "user-3", k=5)["items"][0]["item_id"]
    api.client.put("/v1/items", json=[{"item_id": first, "stock": 0}], headers=api.headers("admin"))
    servers.close()  # stopped; the bundle was trained when the item was on the shelf
    restarted = make_api(data)
    again = next(restarted)
    try:
        assert first not in {i["item_id"] for i in _recs(again, "user-3", k=20)["items"]}
        similar = again.client.get("/v1/items/item-3/similar", params={"k": 20}, headers=again.headers("admin"))
        assert first not in {i["item_id"] for i in similar.json()["items"]}
    finally:
        restarted.close()


def test_similar_items(api: Api) -> None:
    response = api.client.get("/v1/items/item-3/similar", params={"k": 5}, headers=api.headers("recommend:read"))
    body = response.json()
    assert response.status_code == 200 and len(body["items"]) == 5
    assert "item-3" not in {i["item_id"] for i in body["items"]}
    missing = api.client.get("/v1/items/nope/similar", headers=api.headers("recommend:read"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_impressions_attribute_clicks_and_purchases_to_the_model_version(api: Api) -> None:
    answer = _recs(api, "user-5", k=3)
    shown = [i["item_id"] for i in answer["items"]]
    posted = api.client.post(
        "/v1/impressions",
        json={"recommendation_id": answer["recommendation_id"], "user_id": "user-5", "item_ids": [*shown, "ghost"]},
        headers=api.headers("events:write"),
    ).json()
    assert posted["accepted"] == 3 and posted["rejected"][0]["field"] == "item_ids"
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    _post(api, [{**_event("user-5", shown[0], "click"), "timestamp": later}])
    _post(api, [{**_event("user-5", shown[1], "purchase", value=12.5), "timestamp": later}])
    report = api.client.get("/v1/impressions/report", headers=api.headers("admin")).json()
    (row,) = report["versions"]
    assert row["model_version"] == answer["model_version"]
    assert (row["impressions"], row["clicks"], row["purchases"], row["revenue"]) == (3, 1, 1, 12.5)
    assert row["ctr"] == pytest.approx(1 / 3)


def test_erasure_removes_the_user_everywhere(api: Api) -> None:
    admin, reader = api.headers("admin"), api.headers("recommend:read")
    exported = api.client.get("/v1/users/user-8/export", headers=admin).json()
    assert exported["user"]["user_id"] == "user-8" and exported["events"]
    _recs(api, "user-8")
    receipt = api.client.delete("/v1/users/user-8", headers=admin).json()
    deleted = receipt["deleted"]
    assert deleted["users"] == 1 and deleted["events"] == len(exported["events"])
    models = receipt["models"]
    assert models["trained_on_user"] and models["bundles"] and models["forgotten_at"] == "next training"
    assert models["served_as"] == "unknown user"
    assert api.client.get("/v1/users/user-8/export", headers=admin).status_code == 404
    assert api.client.get("/v1/users/user-8/history", headers=reader).status_code == 404
    fresh = _recs(api, "user-8")
    assert not fresh["cached"] and {s for i in fresh["items"] for s in i["sources"]} == {"trending"}
    assert api.client.delete("/v1/users/user-8", headers=admin).status_code == 404


def _copy_as_newer(api: Api) -> str:
    models = api.settings.data_dir / "models" / "default"
    (current,) = [p for p in models.iterdir() if p.is_dir()]
    newer = "29991231T000000-abcdef"
    shutil.copytree(current, models / newer)
    manifest = (models / newer / "bundle.json").read_text().replace(current.name, newer)
    (models / newer / "bundle.json").write_text(manifest)
    return newer


def test_hot_swap_under_load_and_rollback(api: Api) -> None:
    old = api.client.get("/ready").json()["model_version"]
    newer = _copy_as_newer(api)
    failures: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            response = api.client.get(
                "/v1/recommendations", params={"user_id": f"user-{n % 50}"}, headers=api.headers("recommend:read")
            )
            if response.status_code != 200:
                failures.append(response.status_code)
            else:
                versions.add(response.json()["model_version"])

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    swapped = api.client.post("/v1/admin/models/reload", headers=api.headers("admin")).json()
    after = _recs(api, "user-1")
    stop.set()
    for worker in workers:
        worker.join()
    assert not failures and swapped["serving"] == newer and after["model_version"] == newer
    assert versions <= {old, newer}
    rolled = api.client.post("/v1/admin/models/rollback", headers=api.headers("admin")).json()
    assert rolled["serving"] == old and rolled["pinned"] == old
    assert Bundles(api.settings.data_dir / "models").current("default").version == old  # type: ignore[union-attr]
    again = api.client.post("/v1/admin/models/rollback", headers=api.headers("admin"))
    assert again.status_code == 409, "nothing older to roll back to"


@pytest.fixture
def untrained(trained: Path, tmp_path: Path) -> Iterator[Api]:
    data = tmp_path / "d"
    shutil.copytree(trained, data)
    shutil.rmtree(data / "models")
    yield from make_api(data)


def test_no_model_degrades_to_trending_and_says_so(untrained: Api) -> None:
    assert untrained.client.get("/ready").status_code == 503
    answer = _recs(untrained, "user-1", k=4)
    assert answer["model_version"] is None and "no trained bundle" in answer["fallback"]
    assert len(answer["items"]) == 4 and all(i["reason"] == "Trending now" for i in answer["items"])


def test_identical_events_without_ids_in_one_request_are_two_events_and_resending_adds_none(api: Api) -> None:
    twice = [_event("user-9", "item-11", "view"), _event("user-9", "item-11", "view")]
    reader = api.headers("recommend:read")

    def stored() -> int:
        events = api.client.get("/v1/users/user-9/history", params={"limit": 10_000}, headers=reader).json()["events"]
        return sum(e["item_id"] == "item-11" and e["timestamp"].startswith(NOW.isoformat()[:19]) for e in events)

    assert _post(api, twice).json()["accepted"] == 2 and stored() == 2
    assert _post(api, twice).json()["accepted"] == 2 and stored() == 2, "re-sent: collapses onto the stored pair"


def test_event_id_keys_equal_the_file_importers(api: Api) -> None:
    """Keys from ids are computed in Python on the API path; they must equal the importer's SQL ones,
    or an event sent by file and by HTTP would be stored twice."""
    service = api.client.app.state.shop.serving()  # type: ignore[attr-defined]
    table, _ = service.checker.validate([_event("user-10", "item-12", "cart", event_id="shared-1")])
    (expected,) = duckdb.sql(f"SELECT {id_key_sql(RecordKind.EVENTS)} FROM (SELECT 'shared-1' AS event_id)").fetchall()[
        0
    ]
    assert (table.column("key_hi")[0].as_py() << 64) | table.column("key_lo")[0].as_py() == expected


def test_a_default_request_is_served_from_the_bundles_precomputed_answers(api: Api) -> None:
    """Same body as a live computation (forced here by naming the default alpha), marked cached; an event ends it."""
    stored = _recs(api, "user-5", k=8)
    live = _recs(api, "user-5", k=8, alpha=0.5)
    assert stored["cached"] is True and live["cached"] is False
    assert stored["items"] == live["items"] and len(stored["items"]) == 8
    assert RecommendationResponse.model_validate(stored).items[0].item_id == stored["items"][0]["item_id"]
    event = {"user_id": "user-5", "item_id": "item-9", "type": "cart", "timestamp": datetime.now(UTC).isoformat()}
    assert api.client.post("/v1/events", json=event, headers=api.headers("events:write")).status_code == 200
    assert _recs(api, "user-5", k=8)["cached"] is False, "the new event made the stored answer stale"


def test_users_without_history_share_one_cold_answer(api: Api) -> None:
    first = _recs(api, "nobody-1", k=6)
    second = _recs(api, "nobody-2", k=6)
    assert first["cached"] is False and second["cached"] is True
    assert second["user_id"] == "nobody-2" and second["items"] == first["items"] and first["items"]


def test_a_store_failing_for_now_is_a_503_to_retry_and_a_refused_value_a_400(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import Future

    from shopsense.errors import StoreError, StoreUnavailable

    service = api.client.app.state.shop.serving()  # type: ignore[attr-defined]
    event = {"user_id": "u1", "item_id": "item-1", "type": "view", "timestamp": "2026-01-01T00:00:00Z"}
    for error, status in ((StoreUnavailable("the connection is lost"), 503), (StoreError("value refused"), 400)):
        failed: Future[Any] = Future()
        failed.set_exception(error)
        monkeypatch.setattr(service, "submit_events", lambda events, failed=failed: failed)
        answer = api.client.post("/v1/events", json=event, headers=api.headers("events:write"))
        assert answer.status_code == status, answer.text
        if status == 503:
            assert answer.json()["error"]["code"] == "store_unavailable" and answer.headers["retry-after"] == "1"
