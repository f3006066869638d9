"""Request dependencies: the app's :class:`Shop` and its services, and API-key authentication with
scopes and a per-key rate limit. Routes reach state only through these (``tests/unit/api/test_layering.py``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

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


CHECKED = "shopsense.key"
"""Where :class:`shopsense.api.auth.Authenticate` leaves the key record it admitted, in the ASGI scope."""


@dataclass(frozen=True)
class Required:
    """A dependency that admits a request only with a valid key holding ``scope`` (or admin).

    Declared once per route (``Depends(require(Scope.X))``): the route's scope for the OpenAPI
    schema, for :class:`shopsense.api.auth.Authenticate`, which checks the key before the
    framework reads the body, and for the fast paths. A request that middleware admitted is not
    checked again; one that bypassed it (an app built without it) is checked here.

    Async because with the key file it never blocks (a hash, a stat of the file, a token bucket): a
    sync dependency would cost every request a hop to the thread pool. Keys in a shared database
    are read per request (so a revocation on any replica holds at the next request): only that
    read is awaited in the thread pool, never on the event loop.
    """

    scope: Scope

    async def __call__(self, request: Request) -> KeyRecord:
        admitted = request.scope.get(CHECKED)
        if isinstance(admitted, KeyRecord) and admitted.allows(self.scope):  # admitted for this scope, too
            return admitted
        return await self.check(request)

    async def check(self, request: Request) -> KeyRecord:
        """The key record of the request's key, once it is found valid, in scope and under its rate limit.

        Raises:
            ApiError: 401 without a valid key, 403 with one lacking the scope, 429 over the rate limit,
                503 when the key store cannot be read.
        """
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
        if not record.allows(self.scope):
            raise ApiError(
                403,
                "forbidden",
                f"key {record.key_id!r} lacks scope {self.scope.value!r} (it has: {', '.join(record.scopes)})",
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


def require(scope: Scope) -> Required:
    """The dependency admitting keys with ``scope`` (or admin): see :class:`Required`."""
    return Required(scope)


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
