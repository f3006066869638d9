"""Personalised payloads: templates are checked up front, messages and items come from each user's recommendations,
and exports are complete JSON lines or CSV files.

The recommendations are stand-ins with the attributes content reads (item_id, title, score, explanation.reason);
mypy checks those names against the real ``pipeline.Recommendation``, and importing the pipeline here would load
every model (torch included) for nothing.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from shopsense.errors import ConfigError
from shopsense.marketing.content import PAYLOAD_SCHEMA, check_template, export_payload, personalise


@dataclass(frozen=True)
class FakeRecommendation:
    item_id: str
    title: str
    score: float
    explanation: SimpleNamespace


def rec(item_id: str, title: str, score: float, reason: str) -> FakeRecommendation:
    return FakeRecommendation(item_id, title, score, SimpleNamespace(reason=reason))


CATALOGUE: dict[str, list[FakeRecommendation]] = {
    "ann": [
        rec("i1", "Espresso cup", 0.9, "Because you bought coffee"),
        rec("i2", "Milk jug", 0.7, "Because you bought coffee"),
        rec("i3", "Tamper", 0.5, "Popular this week"),
        rec("i4", "Grinder", 0.4, "Popular this week"),
    ],
    "bob": [rec("i9", "Rain coat $ sale", 0.3, "Trending near you")],
    "cy": [],
}


def fake_recommend(user_id: str) -> list[Any]:
    return CATALOGUE[user_id]


def test_messages_and_items_come_from_each_users_recommendations() -> None:
    template = "Hi $user_id: $first_title ($first_reason) and ${count} more ideas: $titles. Why: $reasons. $$5 off"
    table = personalise(["bob", "ann", "cy"], fake_recommend, template, k=3)
    assert table.schema.equals(PAYLOAD_SCHEMA)
    rows = table.to_pylist()
    assert [r["user_id"] for r in rows] == ["bob", "ann", "cy"]
    assert rows[1]["message"] == (
        "Hi ann: Espresso cup (Because you bought coffee) and 3 more ideas: Espresso cup, Milk jug, Tamper. "
        "Why: Because you bought coffee; Popular this week. $5 off"
    )
    # A "$" inside a title is data, not template syntax.
    assert rows[0]["message"].startswith("Hi bob: Rain coat $ sale (Trending near you) and 1 more")
    assert rows[1]["items"] == [
        {"item_id": "i1", "title": "Espresso cup", "reason": "Because you bought coffee", "score": 0.9},
        {"item_id": "i2", "title": "Milk jug", "reason": "Because you bought coffee", "score": 0.7},
        {"item_id": "i3", "title": "Tamper", "reason": "Popular this week", "score": 0.5},
    ]
    # Nothing to recommend: no message rather than a sentence with holes in it.
    assert rows[2]["message"] is None and rows[2]["items"] == []


def test_unknown_placeholders_are_named_before_any_recommendation_is_asked_for() -> None:
    def must_not_run(user_id: str) -> list[Any]:
        raise AssertionError("recommend called before the template was checked")

    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \['first_tilte', 'name'\]; available: "):
        personalise(["ann"], must_not_run, "Dear $name, see $first_tilte and $count more")
    with pytest.raises(ConfigError, match=r"write \$\$ for a dollar sign"):
        check_template("Save $5 today on $first_title")
    # Attribute access and format syntax are not placeholders: nothing can reach Python objects.
    with pytest.raises(ConfigError, match="unknown placeholder"):
        check_template("${first_title} {user_id.__class__} $__class__")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="k must be >= 1"):
        personalise(["ann"], fake_recommend, "$first_title", k=0)
    with pytest.raises(ConfigError, match="user 'ann' appears more than once"):
        personalise(["ann", "bob", "ann"], fake_recommend, "$first_title")


@pytest.fixture
def payload() -> pa.Table:
    return personalise(["ann", "bob", "cy"], fake_recommend, "F\u00fcr $user_id: $first_title, ${count}x", k=2)


def test_jsonl_export_round_trips(tmp_path: Path, payload: pa.Table) -> None:
    path = export_payload(payload, tmp_path / "out" / "payload.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == payload.to_pylist()
    assert lines[0].startswith('{"user_id": "ann", "message": "F\u00fcr ann: Espresso cup, 2x"')
    assert [p.name for p in path.parent.iterdir()] == ["payload.jsonl"]  # no temporary file left behind


def test_csv_export_holds_items_as_json_text(tmp_path: Path, payload: pa.Table) -> None:
    path = export_payload(payload, tmp_path / "payload.csv")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["user_id"] for r in rows] == ["ann", "bob", "cy"]
    assert rows[0]["message"] == "F\u00fcr ann: Espresso cup, 2x"
    assert json.loads(rows[0]["items"]) == payload.column("items")[0].as_py()
    assert json.loads(rows[2]["items"]) == [] and rows[2]["message"] == ""


def test_export_replaces_a_file_whole_and_refuses_unknown_formats(tmp_path: Path, payload: pa.Table) -> None:
    path = tmp_path / "payload.jsonl"
    path.write_text("old content that is longer than one line\n" * 50, encoding="utf-8")
    export_payload(payload.slice(0, 1), path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1
    with pytest.raises(ConfigError, match=r"\.jsonl, \.ndjson or \.csv, not \.xlsx"):
        export_payload(payload, tmp_path / "payload.xlsx")
    with pytest.raises(ConfigError, match="not a personalise\\(\\) payload"):
        export_payload(pa.table({"user_id": ["ann"]}), tmp_path / "x.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.jsonl"]
