"""Precomputed answers: equal to the live answers, and never used once they may be stale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shopsense.pipeline import Pipeline
from shopsense.services.answers import Answers, build_answers, rec_dict, write_answers
from shopsense.services.bundles import Bundles
from shopsense.settings import DEFAULT_EVENT_TYPES, Settings
from shopsense.store import open_store

WEIGHTS = dict(DEFAULT_EVENT_TYPES)


@pytest.fixture(scope="module")
def served(trained: Path) -> tuple[Pipeline, pa.Table, Answers]:
    bundles = Bundles(trained / "models")
    info = bundles.current("default")
    assert info is not None
    answers = bundles.answers(info)
    assert answers is not None, "training wrote no answers"
    store = open_store(Settings(data_dir=trained).resolved_store_url)
    try:
        events = store.scan_events()
    finally:
        store.close()
    return bundles.load(info), events, answers


def _count(events: pa.Table, user: str) -> int:
    return int(pc.sum(pc.equal(events.column("user_id"), user)).as_py())


def test_training_stores_every_active_users_answer_equal_to_the_live_one(
    served: tuple[Pipeline, pa.Table, Answers],
) -> None:
    pipeline, events, answers = served
    assert len(answers) == len(pc.unique(events.column("user_id")))  # the fixture has fewer users than the cap
    for user in ("user-0", "user-3", "user-17", "user-42"):
        mine = events.filter(pc.equal(events.column("user_id"), user))
        live = [rec_dict(r) for r in pipeline.recommend_user(user, mine, WEIGHTS, answers.k)]
        stored = answers.lookup(user, _count(events, user), answers.k, None)
        assert stored is not None
        assert [json.loads(item) for item in stored] == live


def test_a_changed_history_or_a_bigger_k_is_not_answered_from_storage(
    served: tuple[Pipeline, pa.Table, Answers],
) -> None:
    _, events, answers = served
    events_now = _count(events, "user-3")
    assert answers.lookup("user-3", events_now, 5, None) is not None
    assert answers.lookup("user-3", events_now + 1, 5, None) is None, "a new event must make it stale"
    assert answers.lookup("user-3", events_now, answers.k + 1, None) is None
    assert answers.lookup("no-such-user", 0, 5, None) is None


def test_unavailable_items_are_skipped_and_the_list_refilled(served: tuple[Pipeline, pa.Table, Answers]) -> None:
    pipeline, events, answers = served
    n = _count(events, "user-3")
    full = [json.loads(i)["item_id"] for i in answers.lookup("user-3", n, answers.k, None) or []]
    available = np.ones(len(pipeline.items_), dtype=bool)
    available[pipeline.items_.index([full[0]])[0]] = False
    fewer = [json.loads(i)["item_id"] for i in answers.lookup("user-3", n, answers.k - 1, available) or []]
    assert fewer == full[1:], "the next stored item fills the gap"
    assert answers.lookup("user-3", n, answers.k, available) is None, "too few left: compute it live"
    assert answers.lookup("user-3", n, 0, available) == answers.lookup("user-3", n, 0, None) == []


def test_an_erased_user_is_never_answered_from_storage(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_id": ["a", "a", "b"],
            "events": [2, 2, 1],
            "item": pa.array([0, 1, 0], pa.int32()),
            "json": ["1", "2", "3"],
        },
        schema=pa.schema(
            [("user_id", pa.string()), ("events", pa.int64()), ("item", pa.int32()), ("json", pa.large_string())]
        ),
    )
    write_answers(table, tmp_path / "answers.arrow")
    answers = Answers.load(tmp_path / "answers.arrow", 2)
    assert answers.lookup("a", 2, 2, None) == ["1", "2"] and answers.lookup("b", 1, 2, None) == ["3"]
    answers.forget("a")
    assert answers.lookup("a", 2, 2, None) is None


def test_only_the_most_recently_active_users_are_precomputed(served: tuple[Pipeline, pa.Table, Answers]) -> None:
    pipeline, events, _ = served
    table = build_answers(pipeline, events, WEIGHTS, 3, 5)
    latest = pa.TableGroupBy(events.select(["user_id", "timestamp"]), "user_id").aggregate([("timestamp", "max")])
    newest = set(latest.sort_by([("timestamp_max", "descending")]).column("user_id").to_pylist()[:5])
    assert set(table.column("user_id").to_pylist()) == newest
    assert max(pc.value_counts(table.column("user_id")).field("counts").to_pylist()) <= 3
