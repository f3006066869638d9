"""Every documented command, in the documented order (docs/cli.md), on ~50k generated events where the heads learn.

Each step runs the installed ``shopsense`` in a subprocess, as a user would, and checks what it printed:
a crash, a traceback or an output that makes no sense fails here, not on a user's machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.servers import free_port

BIN = Path(sys.executable).parent / "shopsense"
ROOT = Path(__file__).resolve().parents[2]


class Shell:
    """Runs ``shopsense --data-dir DATA ...`` in a folder and keeps what each call printed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / ".shopsense"

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN), "--data-dir", str(self.data), *args],
            cwd=self.folder, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        shown = f"shopsense {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        assert done.returncode == code, shown
        assert "Traceback" not in done.stderr, shown
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shell:
    """A fresh folder with generated data imported the documented way (no flags)."""
    sh = Shell(tmp_path_factory.mktemp("walkthrough"))
    sh("init")
    sh("generate", "--out", "gen", "--users", "1000", "--items", "500", "--events", "50000", "--seed", "7")
    reports = [sh.json("import", kind, f"gen/{kind}.parquet") for kind in ("items", "users", "events")]
    assert [r["rows_written"] for r in reports] == [500, 1000, 50_000]
    return sh


@pytest.fixture(scope="module")
def trained(shop: Shell) -> dict[str, Any]:
    """The default pipeline trained once on the generated shop; its --json summary."""
    summary: dict[str, Any] = shop.json("train")
    return summary


@pytest.mark.integration
def test_data_commands(shop: Shell) -> None:
    stats = shop.json("stats")
    assert stats["events"] == 50_000 and stats["users"] == 1000
    steps = {step["step"]: step["users"] for step in stats["funnel"]}
    assert steps["view"] >= steps["cart"] >= steps["purchase"] > 0
    assert "imports" in shop("stats").stdout.lower()
    shop("export", "events", "events.parquet")
    assert pq.read_metadata(shop.folder / "events.parquet").num_rows == 50_000
    again = shop.json("import", "events", "events.parquet")
    assert again["rows_written"] == 0 and again["already_stored"] == 50_000, "an export re-imports as a no-op"


@pytest.mark.integration
def test_evaluate_scores_models_on_a_leak_free_split(shop: Shell) -> None:
    # --pipeline none: the default pipeline's row is tested on smaller data (tests/unit/eval/test_budget.py)
    args = ("--models", "popular,item_knn", "--pipeline", "none", "--no-tune", "--max-users", "300", "--out", "ev")
    report = shop.json("evaluate", *args)
    text = json.dumps(report)
    assert "item_knn" in text and "popular" in text and "ndcg" in text.lower()
    assert (shop.folder / "ev" / "evaluation.md").exists()


@pytest.mark.integration
def test_train_learns_and_recommend_explains(shop: Shell, trained: dict[str, Any]) -> None:
    summary = trained
    for head in ("attention", "purchase"):
        assert summary["heads"]["lightgbm"][head]["auc"] > 0.7, f"the {head} head learned: {summary['heads']}"
    assert summary["training"]["alpha"] == 0.5 and 0 < summary["training"]["repeat_share"] < 1
    choice = summary["training"]["choice"]
    scored = [t for t in choice["trials"] if t["error"] is None]
    assert len(scored) >= 3 and choice["task"] in {"all", "new"}, "label cuts were tried on the validation split"
    configured = next(t for t in scored if t["name"] == "configured")
    chosen = next(t for t in scored if t["name"] == choice["chosen"])
    assert chosen is configured or chosen["ndcg10"] > configured["ndcg10"], "a change only for a gain on validation"
    if max(t["ndcg10"] for t in scored) > chosen["ndcg10"]:
        assert "within two standard errors" in choice["why"], "a higher score left aside is called noise"
    sources = [t["ndcg10"] for t in choice["sources"].values() if t["error"] is None]
    assert sources and (chosen["ndcg10"] >= max(sources) or choice["settings"]["rank_by"]), "the guard held"
    shown = shop("train").stdout
    assert "lightgbm" in shown and "NDCG@10" in shown, "the text summary prints heads and orderings"
    assert "settings tried on validation" in shown and "chose " in shown, "and what it chose on validation"
    recs = shop.json("recommend", "user-1", "--k", "10")
    assert len(recs) == 10 and len({r["item_id"] for r in recs}) == 10
    reasons = {r["explanation"]["reason"] for r in recs}
    assert reasons - {"Recommended for you"}, f"specific reasons, not only the generic one: {reasons}"
    assert len({round(r["p_purchase"], 6) for r in recs}) > 1, "the heads tell items apart"
    similar = shop.json("similar", recs[0]["item_id"], "--k", "5")
    assert len(similar) == 5
    shop("recommend", "--all", "--out", "recs.parquet")
    table = pq.read_table(shop.folder / "recs.parquet")
    assert table.num_rows == 10 * len(set(table.column("user_id").to_pylist())) and table.num_rows > 5000
    models = shop.json("models", "list")
    assert len(models) >= 2, "each training writes a bundle"
    assert [m["served"] for m in models] == [True] + [False] * (len(models) - 1), "the newest is served"
    rolled = shop("models", "rollback").stderr
    assert models[1]["version"] in rolled, rolled
    assert [m["served"] for m in shop.json("models", "list")][:2] == [False, True], "the rollback is served"
    shop("models", "pin", "--latest")


@pytest.mark.integration
def test_an_item_marked_unavailable_after_training_is_not_recommended(shop: Shell, trained: dict[str, Any]) -> None:
    first = shop.json("recommend", "user-1", "--k", "5")[0]["item_id"]
    shelf = shop.folder / "shelf.csv"
    shelf.write_text(f"item_id,available\n{first},false\n")
    shop("import", "items", str(shelf))
    assert first not in {r["item_id"] for r in shop.json("recommend", "user-1", "--k", "20")}
    shelf.write_text(f"item_id,available\n{first},true\n")
    shop("import", "items", str(shelf))
    assert first == shop.json("recommend", "user-1", "--k", "5")[0]["item_id"]


@pytest.mark.integration
def test_marketing_commands(shop: Shell, trained: dict[str, Any]) -> None:
    built = shop.json("profiles", "build")
    assert built["customers"] > 900
    assert built["churn"]["horizon_days"] > 7 and built["clv_error"] is None, built
    rfm = shop.json("segment", "--rfm")
    assert sum(r["customers"] for r in rfm) == built["customers"]
    shop("segment", "loyal=frequency >= 3", "--export", "loyal.csv")
    members = (shop.folder / "loyal.csv").read_text().splitlines()
    assert len(members) > 2
    profile = shop.json("profiles", "show", members[1].split(",")[0].strip('"'))
    assert 0 <= profile["churn_probability"] <= 1 and profile["clv_90d"] > 0 and profile["frequency"] >= 3
    typo = shop("segment", "x=frequncy > 1", code=2)
    assert "did you mean 'frequency'" in typo.stderr
    clusters = shop.json("clusters")
    assert len(clusters) >= 2 and all(c["description"] for c in clusters)
    shop("audience", "--category", "Sports", "--top", "50", "--out", "sports.csv")
    assert len((shop.folder / "sports.csv").read_text().splitlines()) == 51
    campaign = shop.folder / "c.toml"
    campaign.write_text(
        (ROOT / "config" / "campaigns" / "winback.toml")
        .read_text()
        .replace("2011-11-01T00:00:00Z", "2024-03-01T00:00:00Z")
        .replace("2011-11-21T00:00:00Z", "2024-03-15T00:00:00Z")
    )
    shop("campaign", "create", str(campaign))
    counts = shop.json("campaign", "assign", "winback-nov", "--segment", "frequency >= 1")
    assert set(counts) == {"holdout", "coupon", "recs-email"}
    readout = shop.json("campaign", "readout", "winback-nov")
    assert readout["decision"] and len(readout["variants"]) == 3
    shop("campaign", "content", "winback-nov", "--out", "payload.jsonl")
    lines = (shop.folder / "payload.jsonl").read_text().splitlines()
    assert len(lines) == counts["coupon"] + counts["recs-email"]


@pytest.mark.integration
def test_keys_and_serve(shop: Shell, trained: dict[str, Any], tmp_path: Path) -> None:
    key = shop("keys", "create", "web", "--scope", "recommend:read", "--scope", "events:write").stdout.strip()
    assert any(k["name"] == "web" for k in shop.json("keys", "list"))
    port = free_port()
    server = subprocess.Popen(
        [str(BIN), "--data-dir", str(shop.data), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("w"), env=os.environ.copy(),
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}"}
        answer = httpx.get(f"{base}/v1/recommendations", params={"user_id": "user-1", "k": 5}, headers=headers)
        assert answer.status_code == 200 and len(answer.json()["items"]) == 5
        assert httpx.get(f"{base}/docs").status_code == 200
        assert httpx.get(f"{base}/v1/recommendations", params={"user_id": "user-1"}).status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    assert "Traceback" not in (tmp_path / "server.log").read_text()
