"""Marketing routes: profiles built (a job) and read over HTTP, segments with located expression errors, audiences
(a job whose customers are paged through the job's rows)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from shopsense.services.keys import KeyRing
from tests.unit.api.conftest import Api, job_of


def test_profiles_and_segments_over_http(api: Api) -> None:
    key, _ = KeyRing(api.settings.data_dir / "keys.json").create("marketer", ["marketing"])
    marketer = {"X-API-Key": key}
    assert api.client.get("/v1/profiles/user-1", headers=marketer).status_code == 400, "no profiles built yet"
    job = job_of(api, api.client.post("/v1/profiles/build", json={}, headers=marketer), marketer)
    assert job["kind"] == "profiles" and job["status"] == "succeeded" and job["progress"] == 1.0, job
    built = job["result"]
    assert built["customers"] > 100 and sum(built["lifecycle"].values()) == built["customers"]
    profile = api.client.get("/v1/profiles/user-1", headers=marketer).json()
    assert profile["user_id"] == "user-1" and {"recency_days", "rfm_segment", "interests"} <= set(profile)
    assert api.client.get("/v1/profiles/nobody", headers=marketer).status_code == 404
    body = {"segments": {"buyers": "frequency >= 1", "heavy": "frequency >= 5"}, "members": 3}
    report = api.client.post("/v1/segments", json=body, headers=marketer).json()
    stats = {r["segment"]: r for r in report["stats"]}
    assert stats["heavy"]["customers"] <= stats["buyers"]["customers"]
    assert len(report["members"]["buyers"]) == 3
    bad = api.client.post("/v1/segments", json={"segments": {"x": "frequncy >= 1"}}, headers=marketer)
    message = bad.json()["error"]["message"]
    assert bad.status_code == 400 and "did you mean 'frequency'" in message and "^" in message
    rfm = api.client.post("/v1/segments", json={"rfm": True}, headers=marketer).json()
    assert sum(r["customers"] for r in rfm["stats"]) == built["customers"]
    reader = api.client.post("/v1/segments", json={"rfm": True}, headers=api.headers("recommend:read"))
    assert reader.status_code == 403


CAMPAIGN = {
    "name": "spring-coupon",
    "variants": [
        {"name": "control", "weight": 0.5, "is_control": True},
        {"name": "coupon", "weight": 0.5, "treatment": "10% coupon", "offer_cost": 2.0},
    ],
    "channel": "email",
    "start": "2020-01-01T00:00:00Z",
    "end": "2030-01-01T00:00:00Z",
    "cost_per_contact": 0.05,
}


def test_campaign_create_assign_and_read_out(api: Api) -> None:
    key, _ = KeyRing(api.settings.data_dir / "keys.json").create("marketer", ["marketing"])
    marketer = {"X-API-Key": key}
    client = api.client
    bad = client.post("/v1/campaigns", json={**CAMPAIGN, "variants": CAMPAIGN["variants"][1:]}, headers=marketer)
    assert bad.status_code == 400 and "control" in bad.json()["error"]["message"]
    assert client.post("/v1/campaigns", json=CAMPAIGN, headers=marketer).status_code == 200
    assert client.post("/v1/campaigns/nope/assign", json={"user_ids": ["a"]}, headers=marketer).status_code == 404
    assert job_of(api, client.post("/v1/profiles/build", json={}, headers=marketer), marketer)["status"] == "succeeded"
    counts = client.post(
        "/v1/campaigns/spring-coupon/assign", json={"segment": "frequency >= 1"}, headers=marketer
    ).json()
    again = client.post(
        "/v1/campaigns/spring-coupon/assign", json={"user_ids": ["user-1", "newcomer"]}, headers=marketer
    ).json()
    assert set(counts) == {"control", "coupon"} and sum(again.values()) == sum(counts.values()) + 1
    result = client.get("/v1/campaigns/spring-coupon/readout", headers=marketer).json()
    arms = {v["name"]: v for v in result["variants"]}
    assert arms["control"]["n"] + arms["coupon"]["n"] == sum(again.values())
    assert arms["control"]["exposed"] == 0 and arms["coupon"]["exposed"] == arms["coupon"]["n"]
    assert result["decision"] and result["sample_ratio"]["p_value"] > 0.001


def test_audience_for_a_category(api: Api) -> None:
    key, _ = KeyRing(api.settings.data_dir / "keys.json").create("marketer", ["marketing"])
    marketer = {"X-API-Key": key}
    body = {"target": {"category": "Home"}, "spec": {"top_n": 25}, "limit": 10}
    job = job_of(api, api.client.post("/v1/audiences", json=body, headers=marketer), marketer)
    assert job["kind"] == "audience" and job["status"] == "succeeded", job
    result = job["result"]
    assert result["size"] == 25 and result["rows"] == 10 and result["model"]["positives"] > 0
    page = api.client.get(f"/v1/jobs/{job['job_id']}/rows", params={"limit": 4}, headers=marketer).json()
    rows = api.client.get(f"/v1/jobs/{job['job_id']}/rows", headers=marketer).json()
    assert page["total"] == rows["total"] == 10 and page["rows"] == rows["rows"][:4]
    scores = [c["score"] for c in rows["rows"]]
    assert scores == sorted(scores, reverse=True) and set(rows["rows"][0]) == {
        "user_id",
        "score",
        "rank",
        "main_reason",
    }
    unknown = api.client.post("/v1/audiences", json={"target": {"category": "Hme"}}, headers=marketer)
    assert unknown.status_code == 400 and "Home" in unknown.json()["error"]["message"], "refused, no job"
    assert [j["job_id"] for j in api.client.get("/v1/jobs", headers=marketer).json()] == [job["job_id"]]


def test_profiles_build_without_a_body_uses_the_default_as_of(api: Api, shop_tables: tuple[pa.Table, pa.Table]) -> None:
    key, _ = KeyRing(api.settings.data_dir / "keys.json").create("marketer", ["marketing"])
    marketer = {"X-API-Key": key}
    bare = job_of(api, api.client.post("/v1/profiles/build", headers=marketer), marketer)["result"]
    newest = pc.max(shop_tables[0].column("timestamp")).as_py()
    assert datetime.fromisoformat(bare["as_of"]) == newest + timedelta(seconds=1)
    empty = job_of(api, api.client.post("/v1/profiles/build", json={}, headers=marketer), marketer)["result"]
    assert empty == bare
    earlier = job_of(
        api, api.client.post("/v1/profiles/build", json={"as_of": "2000-01-01T00:00:00Z"}, headers=marketer), marketer
    )
    assert earlier["status"] == "failed" and earlier["error"] and earlier["result"] is None, "the data cannot answer it"
    naive = api.client.post("/v1/profiles/build", json={"as_of": "2024-01-01T00:00:00"}, headers=marketer)
    assert naive.status_code == 422 and naive.json()["error"]["details"][0]["field"].endswith("as_of")
    assert api.client.post("/v1/profiles/build").status_code == 401, "still keyed"
