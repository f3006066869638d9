"""Recommendations that must be computed, off the event loop: a few at once, each question once.

A computed answer holds the interpreter lock for most of its 8-10 ms, and every computing thread
takes a share of the lock from the event loop, which answers all the stored and cached requests.
So computations get their own small thread limit (``serve.live_threads``) and wait for a slot
instead of crowding the loop. And when a popular user acts, every request for them misses the
cache at once: without coalescing, each one computed the same answer, at the same time, sharing
the lock (measured: p95 200 ms for all recommendations at 100 events per second for the Zipf
users). Here the first request computes and the others wait for it, then take its answer from the
cache, each with its own ``recommendation_id``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Mapping
from functools import partial
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter

from shopsense.services.serving import RecAnswer, ServingService


class LiveAnswers:
    """Computes recommendations in a thread pool of its own size, one computation per question."""

    def __init__(self, service: ServingService, threads: int) -> None:
        self.service = service
        self.limiter = CapacityLimiter(threads)
        self._flights: dict[Hashable, asyncio.Event] = {}

    async def answer(
        self,
        user_id: str,
        k: int,
        *,
        alpha: float | None = None,
        diversity: float | None = None,
        rules: Mapping[str, Any] | None = None,
    ) -> RecAnswer:
        """The computed answer, or the one a request already computing it gets (taken from the cache).

        Raises:
            ConfigError: an override the pipeline refused.
        """
        svc = self.service
        # Asked again after each wait: the user may have acted meanwhile, and the next computation
        # must be findable under the question as it stands now.
        while (flight := self._flights.get(question := svc.question(user_id, k, alpha, diversity, rules))) is not None:
            await flight.wait()
            shared = svc.ready(user_id, k, alpha=alpha, diversity=diversity, rules=rules)
            if shared is not None:
                return shared
        done = self._flights[question] = asyncio.Event()
        try:
            compute = partial(svc.recommend, user_id, k, alpha=alpha, diversity=diversity, rules=rules)
            return await anyio.to_thread.run_sync(compute, limiter=self.limiter)
        finally:
            del self._flights[question]
            done.set()
