"""Request dependencies: the app's :class:`Shop` and its services, and API-key authentication with
scopes and a per-key rate limit. Routes reach state only through these (``tests/unit/api/test_layering.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable

from anyio import to_thread
from fastapi import Request

from shopsense.api.error_bodies import RETRY_AFTER_S
from shopsense.api.errors import ApiError
from shopsense.errors import StoreError
from shopsense.services.keys import KeyRecord, KeyRing, Scope
from shopsense.services.serving import ServingService
from shopsense.services.shop import Shop


class RateLimiter:
    """Token bucket per key: ``rate`` requests per second sustained, ``burst`` at once, in memory.

    Several replicas over one store each hold their own buckets; exchanging every request's count
    would put a database write on every request. Instead each admits its share: with N replicas
    alive (:meth:`share`, told by the coordination loop every second), ``rate / N`` and ``burst / N``
    per key, so the sum over replicas never exceeds the configured limit. The price: a client whose
    requests all reach one replica (a sticky load balancer, one keep-alive connection) gets only
    that replica's share, 1/N of its limit. A share of the burst is never below one request, so
    with more replicas than ``burst`` the sum of bursts can exceed it; for a second after a replica
    joins, the others still admit their older, larger shares.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.limit_rate, self.limit_burst = rate, burst
        self.rate, self.burst = rate, float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def share(self, replicas: int) -> None:
        """Admit this replica's share of the limits when ``replicas`` (at least one) serve the store."""
        n = max(1, replicas)
        with self._lock:
            self.rate, self.burst = self.limit_rate / n, max(1.0, self.limit_burst / n)

    def take(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


def shop_of(request: Request) -> Shop:
    """The app's one :class:`Shop` (built by ``create_app``)."""
    shop: Shop = request.app.state.shop
    return shop


def serving(request: Request) -> ServingService:
    """The shop's online service: for the fast paths, which call handlers without dependency solving."""
    return shop_of(request).serving()


async def service(request: Request) -> ServingService:
    """The shop's online service (async: a sync dependency would cost every request a thread hop)."""
    return serving(request)


def require(scope: Scope) -> Callable[[Request], Awaitable[KeyRecord]]:
    """A dependency that admits a request only with a valid key holding ``scope`` (or admin).

    Async because with the key file it never blocks (a hash, a stat of the file, a token bucket): a
    sync dependency would cost every request a hop to the thread pool. Keys in a shared database
    are read per request (so a revocation on any replica holds at the next request): only that
    read is awaited in the thread pool, never on the event loop.
    """

    async def check(request: Request) -> KeyRecord:
        keys: KeyRing = shop_of(request).keys
        presented = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
        if not presented:
            raise ApiError(
                401,
                "unauthenticated",
                "missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        record = await _verified(keys, presented)
        if record is None:
            raise ApiError(401, "unauthenticated", "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        if not record.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"key {record.key_id!r} lacks scope {scope.value!r} (it has: {', '.join(record.scopes)})",
            )
        wait = request.app.state.limiter.take(record.key_id)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"key {record.key_id!r} is over its rate limit; retry in {wait:.2f}s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        return record

    return check


async def _verified(keys: KeyRing, presented: str) -> KeyRecord | None:
    if not keys.blocking:
        return keys.verify(presented)
    try:
        return await to_thread.run_sync(keys.verify, presented)
    except StoreError as exc:
        raise ApiError(
            503,
            "store_unavailable",
            f"the API key cannot be checked now: {exc}",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from exc


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None
