"""Issue 26 end to end, as a new user goes: a shop's headerless export (its own action codes, a day number and a
time of day, a department path in three columns, quantity 0 on coupon lines) imported with one mapping file per
kind, then ``shopsense evaluate`` on it (default pipeline, a named pipeline, parameters, a primary task, a budget)
while other read-only commands read the same store.

The export is written from ``shopsense generate`` data, so the right answer is known: every event comes back with
its type and its timestamp to the minute, every item with its three-level category path.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

CODES = {"view": "V", "click": "C", "cart": "B", "favourite": "W", "purchase": "P", "return": "R"}
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
ZERO_EVERY = 97
"""Every 97th line is a coupon line of quantity 0."""

ITEMS_TOML = """
header = false
source_columns = ["sku", "brand", "name", "dept", "commodity", "sub", "price"]
[columns]
item_id = 1                                     # by position
brand = 2
title = "name"
price = 7
[derived]
category = "concat_ws(' > ', dept, commodity, sub)"
"""
EVENTS_TOML = """
header = false
source_columns = ["cust", "sku", "code", "day", "hhmm", "qty", "amount"]
zero_quantity = "drop"
[columns]
user_id = 1
item_id = "sku"
quantity = 6
value = "amount"
[derived]
type = "CASE code WHEN 'V' THEN 'view' WHEN 'C' THEN 'click' WHEN 'B' THEN 'cart' WHEN 'W' THEN 'favourite' \
WHEN 'P' THEN 'purchase' WHEN 'R' THEN 'return' END"
timestamp = "TIMESTAMP '2024-01-01' + to_days(CAST(day AS INTEGER) - 1) \
+ to_minutes(CAST(hhmm AS INTEGER) // 100 * 60 + CAST(hhmm AS INTEGER) % 100)"
"""
LEAN_PIPELINE = """
name = "lean"
[[ranker.candidates.sources]]
name = "trending"
model = "popular"
[[ranker.candidates.sources]]
name = "linear"
model = "ease"
"""
HOLD = """
import sys
from shopsense.services.shop import Shop
from shopsense.settings import load_settings

with Shop(load_settings(data_dir=sys.argv[1]), read_only=True) as shop:
    print(shop.data.stats().events, flush=True)
    sys.stdin.readline()  # hold the store open for reading until the test says so
"""


def _shopsense(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopsense", "--data-dir", str(data), *args],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def _start(data: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shopsense", "--data-dir", str(data), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data written as the shop's headerless, pipe-delimited exports, with the two mapping files."""
    root = tmp_path_factory.mktemp("own-export")
    generate = ["generate", "--out", str(root / "g"), "--users", "300", "--items", "200", "--events", "20000"]
    done = _shopsense(root / "unused", *generate)
    assert done.returncode == 0, done.stderr
    with (root / "items.txt").open("w", newline="") as f:
        out = csv.writer(f, delimiter="|")
        for item in pq.read_table(root / "g" / "items.parquet").to_pylist():
            dept, commodity = item["category"].split(" > ")
            sub = f"SUB{item['item_id'][-1]}"
            out.writerow([item["item_id"], item["brand"], item["title"], dept, commodity, sub, item["price"]])
    with (root / "export.txt").open("w", newline="") as f:
        out = csv.writer(f, delimiter="|")
        for n, event in enumerate(pq.read_table(root / "g" / "events.parquet").to_pylist()):
            when = event["timestamp"]
            quantity = 0 if n % ZERO_EVERY == 0 else event["quantity"] or 1
            value = "" if event["value"] is None else event["value"]
            day, hhmm = (when - EPOCH).days + 1, f"{when.hour:02d}{when.minute:02d}"
            out.writerow([event["user_id"], event["item_id"], CODES[event["type"]], day, hhmm, quantity, value])
    (root / "items.toml").write_text(ITEMS_TOML)
    (root / "events.toml").write_text(EVENTS_TOML)
    (root / "lean.toml").write_text(LEAN_PIPELINE)
    (root / "params.toml").write_text("[popular]\nwindow_days = 30\n")
    return root


@pytest.fixture(scope="module")
def imported(shop: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The store after importing both exports with their mapping files, and the import reports."""
    data, reports = shop / "data", {}
    for kind, file in (("items", "items.txt"), ("events", "export.txt")):
        done = _shopsense(data, "import", kind, str(shop / file), "--mapping", str(shop / f"{kind}.toml"), "--json")
        assert done.returncode == 0, done.stderr
        reports[kind] = json.loads(done.stdout)
    return data, reports


def test_one_mapping_file_imports_a_headerless_export_with_derived_fields(
    shop: Path, imported: tuple[Path, dict[str, dict[str, Any]]]
) -> None:
    data, reports = imported
    source = pq.read_table(shop / "g" / "events.parquet").to_pylist()
    kept = [e for n, e in enumerate(source) if n % ZERO_EVERY != 0]
    report = reports["events"]
    assert (report["rows_read"], report["zero_quantity_dropped"]) == (len(source), len(source) - len(kept))
    assert report["rows_written"] + report["duplicates_collapsed"] == len(kept)
    assert reports["items"]["rows_written"] == 200 and reports["items"]["ignored_columns"] == []

    done = _shopsense(data, "export", "events", str(shop / "events.parquet"))
    assert done.returncode == 0, done.stderr
    stored = pq.read_table(shop / "events.parquet").to_pylist()

    def key(e: dict[str, Any]) -> tuple[str, str, str, datetime]:
        return (e["user_id"], e["item_id"], e["type"], e["timestamp"].replace(second=0, microsecond=0, tzinfo=UTC))

    assert sorted(map(key, stored)) == sorted(map(key, kept)), "types from the code table, times to the minute"

    done = _shopsense(data, "export", "items", str(shop / "items.parquet"))
    assert done.returncode == 0, done.stderr
    items = {i["item_id"]: i["category"] for i in pq.read_table(shop / "items.parquet").to_pylist()}
    for item in pq.read_table(shop / "g" / "items.parquet").to_pylist():
        path = items[item["item_id"]]
        path = " > ".join(path) if isinstance(path, list) else path
        assert path == f"{item['category']} > SUB{item['item_id'][-1]}"


def test_evaluate_runs_beside_other_readers_with_its_options(
    shop: Path, imported: tuple[Path, dict[str, dict[str, Any]]]
) -> None:
    data, _ = imported
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and int(holder.stdout.readline()) > 0, "the holder has the store open"
        evaluation = _start(
            data, "evaluate", "--models", "popular,ease", "--pipeline", "default",
            "--pipeline", str(shop / "lean.toml"), "--param", "ease.max_items=50",
            "--params", str(shop / "params.toml"), "--task", "new", "--budget", "3m",
            "--no-tune", "--out", str(shop / "evaluation"), "--json",
        )  # fmt: skip
        stats = _shopsense(data, "stats", "--json")
        exported = _shopsense(data, "export", "users", str(shop / "users.csv"))
        out, err = evaluation.communicate(timeout=300)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["events"] > 0
    assert exported.returncode == 0, exported.stderr
    assert evaluation.returncode == 0, err
    report = json.loads(out)
    assert report["primary_task"] == "new" and report["budget"]["seconds"] == 180
    models = report["models"]
    assert {"popular", "ease", "pipeline:default", "pipeline:lean"} <= set(models)
    for row in ("pipeline:default", "pipeline:lean", "popular", "ease"):
        assert models[row]["ndcg@10"] is not None, f"{row}: {models[row].get('error')}"
    assert models["ease"]["params"]["max_items"] == 50
    assert models["popular"]["params"]["window_days"] == 30
    assert {"popular", "ease", "pipeline:default", "pipeline:lean"} <= set(report["estimate_seconds"])
    assert report["budget"]["spent_seconds"] <= 180 and report["budget"]["skipped"] == []
