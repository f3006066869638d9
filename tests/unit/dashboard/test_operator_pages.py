"""The operator pages over the app in-process (the browser tests drive them in Chromium too)."""

from __future__ import annotations

import pytest

from tests.unit.api.conftest import Api
from tests.unit.dashboard.conftest import sign_in


@pytest.mark.parametrize(
    "path",
    ["/", "/?start=2000-01-01&end=2100-12-31", "/?start=bad", "/customers", "/customers?user=user-3",
     "/customers?user=nobody", "/items", "/items?q=item-1", "/items?item=item-5", "/items?item=nothing",
     "/models", "/models?window=7+days", "/data"],
)  # fmt: skip
def test_every_operator_page_answers_a_signed_in_viewer(dash: Api, path: str) -> None:
    sign_in(dash.client, dash.keys["admin"])
    answer = dash.client.get(path)
    assert answer.status_code == 200, answer.text[:2000]
    assert answer.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store"


def test_the_overview_keeps_to_its_date_range(dash: Api) -> None:
    sign_in(dash.client, dash.keys["admin"])
    nothing = dash.client.get("/?start=1990-01-01&end=1990-01-31")
    assert "No events in this range." in nothing.text


def test_recommendations_rerank_with_alpha_and_say_why(dash: Api) -> None:
    sign_in(dash.client, dash.keys["admin"])
    got = {
        alpha: dash.client.get(
            "/customers/recommendations",
            params={"user": "user-3", "alpha": alpha},
            headers={"Accept": "application/json"},
        ).json()
        for alpha in ("0", "1")
    }
    orders = {alpha: [i["item_id"] for i in answer["items"]] for alpha, answer in got.items()}
    assert len(orders["0"]) == 10 and orders["0"] != orders["1"]
    first = got["1"]["items"][0]
    assert first["p_attention"] is not None and first["p_purchase"] is not None and first["reason"]
    bad = dash.client.get("/customers/recommendations", params={"user": "user-3", "alpha": "2"})
    assert bad.status_code == 422


def test_a_read_only_key_cannot_train_promote_roll_back_or_import(dash: Api) -> None:
    csrf = sign_in(dash.client, dash.keys["recommend:read"])
    assert 'id="train"' not in dash.client.get("/models").text
    for path in ("/models/train", "/models/rollback", "/models/latest", "/data/import"):
        answer = dash.client.post(path, data={"csrf": csrf, "version": "x"}, follow_redirects=False)
        assert answer.status_code == 403, path
    files = {"file": ("e.csv", b"user_id,item_id,type,timestamp\n")}
    assert dash.client.post("/data/upload", data={"csrf": csrf}, files=files).status_code == 403


def test_a_json_fetch_without_a_session_gets_401_not_a_redirect(dash: Api) -> None:
    answer = dash.client.get("/customers/recommendations?user=user-3", headers={"Accept": "application/json"})
    assert answer.status_code == 401
