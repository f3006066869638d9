"""Computed recommendations: each question computed once however many ask at once, a few at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from shopsense.api.computing import LiveAnswers
from shopsense.errors import ConfigError
from shopsense.services.serving import RecAnswer, ServingService
from tests.unit.api.conftest import Api


class Watched:
    """Counts a service's computations and the most that ran at once, each made to take a while."""

    def __init__(
        self, service: ServingService, monkeypatch: pytest.MonkeyPatch, before: float = 0.05, after: float = 0.0
    ) -> None:
        self.calls, self.computed, self.running, self.most = 0, 0, 0, 0
        self._lock = threading.Lock()
        compute = service.recommend

        def slow(*args: Any, **kwargs: Any) -> RecAnswer:
            with self._lock:
                self.calls += 1
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                time.sleep(before)
                answer = compute(*args, **kwargs)
                with self._lock:
                    self.computed += 1
                time.sleep(after)
                return answer
            finally:
                with self._lock:
                    self.running -= 1

        monkeypatch.setattr(service, "recommend", slow)


def _service(api: Api) -> ServingService:
    service: ServingService = api.client.app.state.shop.serving()  # type: ignore[attr-defined]
    return service


def test_concurrent_requests_for_one_answer_share_one_computation(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(api)
    watched = Watched(service, monkeypatch)

    async def ask() -> list[RecAnswer]:
        live = LiveAnswers(service, 4)
        return await asyncio.gather(*(live.answer("user-1", 5, alpha=0.3) for _ in range(8)))

    answers = asyncio.run(ask())
    assert watched.calls == 1
    assert len({a.recommendation_id for a in answers}) == 8, "each response has its own id"
    assert all(a.items == answers[0].items for a in answers) and answers[0].items
    assert sum(a.cached for a in answers) == 7, "the others took the computed answer from the cache"


@pytest.mark.parametrize("threads", [1, 2])
def test_no_more_computations_at_once_than_the_limit(api: Api, monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    service = _service(api)
    watched = Watched(service, monkeypatch)

    async def ask() -> list[RecAnswer]:
        live = LiveAnswers(service, threads)
        return await asyncio.gather(*(live.answer(f"user-{i}", 5, alpha=0.4) for i in range(6)))

    answers = asyncio.run(ask())
    assert watched.calls == 6 and watched.most == threads
    assert [a.user_id for a in answers] == [f"user-{i}" for i in range(6)]


def test_a_refused_question_is_refused_to_every_asker(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(api)
    watched = Watched(service, monkeypatch)

    async def ask() -> list[Any]:
        live = LiveAnswers(service, 2)
        return await asyncio.gather(*(live.answer("user-1", 5, alpha=2.0) for _ in range(3)), return_exceptions=True)

    outcomes = asyncio.run(ask())
    assert all(isinstance(o, ConfigError) for o in outcomes), outcomes
    assert watched.calls == 3, "a failed computation leaves nothing to share: each asker tries (and is refused)"


def test_after_the_user_acts_waiters_and_newcomers_share_the_next_computation(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiters woken by a computation that their user's new event made stale compute again under the
    question as it now stands, where a request arriving meanwhile finds that computation."""
    service = _service(api)
    watched = Watched(service, monkeypatch, before=0.15, after=0.15)  # each computation: wait, compute, wait
    event = {"user_id": "user-1", "item_id": "item-2", "type": "cart", "timestamp": datetime.now(UTC).isoformat()}

    async def ask(live: LiveAnswers) -> RecAnswer:  # as the route asks: a cached answer first
        return service.ready("user-1", 5, alpha=0.3) or await live.answer("user-1", 5, alpha=0.3)

    async def until(done: Callable[[], bool]) -> None:
        while not done():
            await asyncio.sleep(0.005)

    async def run() -> list[RecAnswer]:
        live = LiveAnswers(service, 4)
        first = [asyncio.create_task(ask(live)) for _ in range(3)]  # one computes, two wait for it
        await until(lambda: watched.computed == 1)  # computed from the history before the event
        posted = api.client.post("/v1/events", json=event, headers=api.headers("events:write"))
        assert posted.status_code == 200
        await until(lambda: watched.calls == 2)  # a waiter found the answer stale and computes again
        late = asyncio.create_task(ask(live))  # within that computation's 0.15 s head start
        return await asyncio.gather(*first, late)

    answers = asyncio.run(run())
    assert watched.calls == 2, "the stale computation and one for the new history, shared by the newcomer"
    assert answers[1].items == answers[2].items == answers[3].items
