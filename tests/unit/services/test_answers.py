"""Precomputed answers: equal to the live answers, and never used once they may be stale."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shopsense.pipeline import Pipeline
from shopsense.services import answers as answers_module
from shopsense.services.answers import Answers, build_answers, purge_answers, rec_dict, write_answers
from shopsense.services.bundles import Bundles
from shopsense.services.erasure import models_receipt
from shopsense.settings import DEFAULT_EVENT_TYPES, Settings
from shopsense.store import open_store
from shopsense.store.base import erasure_hash

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


def _two_users(tmp_path: Path) -> Answers:
    """A stored answers file of two users ("a": two items, "b": one), loaded with k = 2."""
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
    return Answers.load(tmp_path / "answers.arrow", 2)


def test_an_erased_user_is_never_answered_from_storage(tmp_path: Path) -> None:
    answers = _two_users(tmp_path)
    assert answers.lookup("a", 2, 2, None) == ["1", "2"] and answers.lookup("b", 1, 2, None) == ["3"]
    answers.forget("a")
    assert answers.lookup("a", 2, 2, None) is None


def test_users_erased_after_training_are_never_answered_from_storage(tmp_path: Path) -> None:
    """A bundle loaded after an erasure gets the store's tombstones (hashes of the ids, not the ids)."""
    answers = _two_users(tmp_path)
    assert answers.forget_erased({erasure_hash("a"), erasure_hash("never-stored")}) == 1
    assert answers.lookup("a", 2, 2, None) is None and answers.lookup("b", 1, 2, None) == ["3"]
    assert purge_answers(tmp_path / "answers.arrow", "a") == 2
    assert purge_answers(tmp_path / "answers.arrow", "a") == 0
    assert Answers.load(tmp_path / "answers.arrow", 2).table.column("user_id").to_pylist() == ["b"]
    assert answers.lookup("b", 1, 2, None) == ["3"], "the mapped file replaced under it still answers"


def test_only_the_most_recently_active_users_are_precomputed(served: tuple[Pipeline, pa.Table, Answers]) -> None:
    pipeline, events, _ = served
    table = build_answers(pipeline, events, WEIGHTS, 3, 5)
    latest = pa.TableGroupBy(events.select(["user_id", "timestamp"]), "user_id").aggregate([("timestamp", "max")])
    newest = set(latest.sort_by([("timestamp_max", "descending")]).column("user_id").to_pylist()[:5])
    assert set(table.column("user_id").to_pylist()) == newest
    assert max(pc.value_counts(table.column("user_id")).field("counts").to_pylist()) <= 3


def _answers_table(users: list[str]) -> pa.Table:
    n = len(users)
    return pa.table(
        {
            "user_id": users,
            "events": [1] * n,
            "item": pa.array(range(n), pa.int32()),
            "json": pa.array([str(i) for i in range(n)], pa.large_string()),
        },
        schema=pa.schema(
            [("user_id", pa.string()), ("events", pa.int64()), ("item", pa.int32()), ("json", pa.large_string())]
        ),
    )


def test_two_erasures_at_once_both_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both read the file before either rewrites it, unless they take turns: the last rename would win
    and bring the first user's rows back."""
    path = tmp_path / "answers.arrow"
    write_answers(_answers_table(["a", "b", "c"]), path)
    write = answers_module.write_answers

    def slow(table: pa.Table, target: Path) -> None:
        time.sleep(0.3)
        write(table, target)

    monkeypatch.setattr(answers_module, "write_answers", slow)
    with ThreadPoolExecutor(2) as pool:
        removed = list(pool.map(lambda user: purge_answers(path, user), ["a", "b"]))
    assert removed == [1, 1]
    assert Answers.load(path, 2).table.column("user_id").to_pylist() == ["c"]


def test_a_file_without_the_user_is_neither_rewritten_nor_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "answers.arrow"
    write_answers(_answers_table(["a", "b"]), path)
    before = path.stat().st_ino

    def never(table: pa.Table, target: Path) -> None:
        raise AssertionError("rewritten")

    monkeypatch.setattr(answers_module, "write_answers", never)
    assert purge_answers(path, "nobody") == 0
    assert path.stat().st_ino == before


def test_a_bundle_that_cannot_be_purged_is_reported_and_the_others_purged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "models"
    for version in ("v1", "v2", "v3"):
        (root / "default" / version).mkdir(parents=True)
        write_answers(_answers_table(["a", "b"]), root / "default" / version / "answers.arrow")
    (root / "default" / "v1" / "answers.arrow").write_bytes(b"not an arrow file")
    with caplog.at_level(logging.ERROR):
        purged = Bundles(root).purge_user("a")
    assert purged.removed == 2 and purged.failed == ["default/v1"]
    assert "default/v1" in caplog.text
    for version in ("v2", "v3"):
        assert Answers.load(root / "default" / version / "answers.arrow", 2).table.column("user_id").to_pylist() == [
            "b"
        ]
    receipt = models_receipt(Bundles(root), None, purged)
    assert receipt["answers_not_purged"] == ["default/v1"] and receipt["answers_removed"] == 2
