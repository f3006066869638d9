"""The answer cache: a byte bound that holds after any puts, one LRU across users and questions, stale clears."""

from __future__ import annotations

import shutil
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shopsense.services.answer_cache import AnswerCache, answer_bytes
from shopsense.services.serving import RecAnswer, ServingService
from shopsense.settings import Settings
from shopsense.store.base import open_store


def _answer(n: int, tag: str = "x") -> RecAnswer:
    items = [{"item_id": f"{tag}{i}", "score": float(i), "sources": ["als"]} for i in range(n)]
    return RecAnswer(f"r-{tag}", "u", "v1", items)


def _key(history: int, query: object, model: str = "v1") -> tuple[object, ...]:
    return (history, model, query)


def test_size_is_measured_once_and_grows_with_the_answer() -> None:
    small, large = answer_bytes(_key(1, 1), _answer(1)), answer_bytes(_key(1, 1), _answer(100))
    assert 0 < small < large
    assert large > 100 * 100, "each item's dict, strings and numbers are counted"
    encoded = RecAnswer("r", "u", "v1", [], encoded=['{"item_id":"a"}'] * 10)
    assert answer_bytes(_key(1, 1), encoded) == answer_bytes(_key(1, 1), None) + 150


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6000),
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 2), st.integers(0, 20), st.integers(0, 40)), max_size=80
    ),
)
def test_bytes_never_exceed_the_bound(bound: int, puts: list[tuple[str, int, int, int]]) -> None:
    cache: AnswerCache[RecAnswer] = AnswerCache(bound)
    for user, history, query, n in puts:
        cache.put(user, _key(history, query), _answer(n, user))
        stats = cache.stats()
        assert stats.bytes <= bound
        assert stats.bytes == sum(answer_bytes(k, a) for (_, k), (a, _) in cache._lru.items())
        assert stats.entries == sum(len(keys) for keys in cache._users.values())
        for keys in cache._users.values():
            assert len({k[:2] for k in keys}) == 1, "a user's answers share one history and model"


def test_least_recently_used_goes_first_across_users_and_questions() -> None:
    one = answer_bytes(_key(1, 0), _answer(5, "a"))
    cache: AnswerCache[RecAnswer] = AnswerCache(3 * one + one // 2)
    cache.put("a", _key(1, 0), _answer(5, "a"))
    cache.put("b", _key(1, 0), _answer(5, "b"))
    cache.put("a", _key(1, 1), _answer(5, "a"))
    assert cache.get("a", _key(1, 0)) is not None  # now b's answer is the least recently used
    cache.put("a", _key(1, 2), _answer(5, "a"))
    assert cache.get("b", _key(1, 0)) is None
    assert [cache.get("a", _key(1, q)) is not None for q in range(3)] == [True, True, True]
    cache.put("c", _key(1, 0), _answer(5, "c"))  # evicts a's question 0 (gets refreshed 0, 1, 2 in order)
    assert cache.get("a", _key(1, 0)) is None and cache.get("c", _key(1, 0)) is not None
    assert cache.stats().entries == 3


def test_one_user_asking_many_questions_evicts_their_own_oldest() -> None:
    one = answer_bytes(_key(1, 0), _answer(20))
    cache: AnswerCache[RecAnswer] = AnswerCache(10 * one)
    for query in range(1000):
        cache.put("u", _key(1, query), _answer(20))
    stats = cache.stats()
    assert stats.bytes <= 10 * one and 8 <= stats.entries <= 10
    assert cache.get("u", _key(1, 999)) is not None and cache.get("u", _key(1, 0)) is None


def test_drop_forgets_one_user_only() -> None:
    cache: AnswerCache[RecAnswer] = AnswerCache(10**6)
    for query in range(5):
        cache.put("a", _key(1, query), _answer(3))
    cache.put("b", _key(1, 0), _answer(3))
    before = cache.stats().bytes
    cache.drop("a")
    cache.drop("nobody")
    assert cache.stats().entries == 1 and cache.get("b", _key(1, 0)) is not None
    assert cache.stats().bytes == answer_bytes(_key(1, 0), _answer(3)) < before
    cache.clear()
    assert cache.stats().entries == 0 and cache.stats().bytes == 0


def test_a_new_history_or_model_clears_the_users_older_answers() -> None:
    cache: AnswerCache[RecAnswer] = AnswerCache(10**6)
    cache.put("a", _key(1, 0), _answer(3))
    cache.put("a", _key(1, 1), _answer(3))
    cache.put("b", _key(1, 0), _answer(3))
    cache.put("a", _key(2, 0), _answer(3))  # the user's history moved on
    assert cache.get("a", _key(1, 0)) is None and cache.get("a", _key(1, 1)) is None
    assert cache.get("a", _key(2, 0)) is not None and cache.get("b", _key(1, 0)) is not None
    cache.put("a", _key(2, 0, model="v2"), _answer(3))  # the model moved on
    assert cache.get("a", _key(2, 0)) is None and cache.stats().entries == 2


def test_zero_keeps_nothing_and_an_answer_over_the_bound_is_not_kept() -> None:
    off: AnswerCache[RecAnswer] = AnswerCache.from_mb(0)
    off.put("a", _key(1, 0), _answer(3))
    assert off.get("a", _key(1, 0)) is None and off.stats().bytes == 0
    tiny: AnswerCache[RecAnswer] = AnswerCache(100)
    tiny.put("a", _key(1, 0), _answer(3))
    assert tiny.stats().entries == 0


def test_many_questions_of_one_user_stay_under_the_bound(trained: Path, tmp_path: Path) -> None:
    """The issue's probe, without HTTP: 3,000 distinct ``min_price`` questions of ``k=100`` for one user."""
    shutil.copytree(trained, tmp_path / "data")
    bound_mb = 0.5
    config = Settings(data_dir=tmp_path / "data", serve={"reload_seconds": 0, "cache_mb": bound_mb})  # type: ignore[arg-type]
    store = open_store(config.resolved_store_url)
    service = ServingService(config, store)
    try:
        user = next(u for u in service.live._users.names if service.live.count(u) > 0)
        peak = 0
        for n in range(3000):
            service.recommend(user, 100, rules={"min_price": 0.001 * n})
            peak = max(peak, service.held()["cache_bytes"])
        held = service.held()
        assert peak <= bound_mb * 1024 * 1024
        assert 0 < held["cache_entries"] < 3000
        assert held["events"] == service.live.held()[0] > 0 and held["events_bytes"] > 0
        assert held["ids_bytes"] > 0 and held["store_bytes"] > 0, "the ids and the store's buffers are counted too"
        assert service.ready(user, 100, rules={"min_price": 0.001 * 2999}) is not None, "the newest is kept"
        assert service.ready(user, 100, rules={"min_price": 0.0}) is None, "the oldest was evicted"
        before = service.held()
        for _ in range(1000):  # what the route does with every answer: kept for attributing impressions
            service.remember(service.recommend(user, 10), None)
        logged = service.held()
        assert logged["answers_logged"] - before["answers_logged"] == 1000
        assert logged["answers_log_bytes"] - before["answers_log_bytes"] >= 1000 * 100, "ids and pairs counted"
    finally:
        service.close()
        store.close()
