"""A Python client for the shopsense REST API that a shop's backend can call without losing events.

Networks drop connections and servers restart; a client that gives up loses events, and one that
re-sends blindly duplicates them. This one re-sends safely: every event gets an ``event_id`` before
its first attempt (a UUID when the caller gave none), so a batch re-sent after a lost answer is
stored once (the server skips an event id it already holds). Retries back off exponentially with
full jitter, honour ``Retry-After`` on 429, and stop after ``retries`` attempts or ``deadline``
seconds, raising :class:`ClientError` with the server's structured error when there was one.

    from shopsense.client import Client

    with Client("http://127.0.0.1:8000", api_key) as shop:
        shop.send_events([{"user_id": "u1", "item_id": "i9", "type": "view"}])
        items = shop.recommend("u1", k=5)["items"]

Writes whose repetition is harmless (events with ids, item and user upserts, erasure) are retried on
any transport error, 429 and 5xx; a write that is not (impressions) only when the request surely did
not reach the server (the connection was refused) or was refused unprocessed (429, 503).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
"""Answers after which a request whose repetition is harmless is sent again."""
UNPROCESSED_STATUS = frozenset({429, 503})
"""Answers that say the server did not act on the request (rate limit, not ready)."""


class ClientError(Exception):
    """A request that failed for good: the server's answer (status, error code, message), or the last
    transport error when no answer came."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class SendReport:
    """What :meth:`Client.send_events` achieved: events acknowledged (committed by the server), and those
    the server rejected, with their index in the caller's sequence and the reason."""

    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0


class Client:
    """A synchronous client for one shopsense server (or a load balancer in front of several replicas).

    ``timeout`` bounds each attempt; ``retries`` the attempts after the first; ``deadline`` the time one
    call may take over all its attempts (a server restarting takes a few seconds to come back).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 8,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        deadline: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )
        self.retries, self.backoff, self.max_backoff, self.deadline = retries, backoff, max_backoff, deadline

    # -- events and records ---------------------------------------------------------------------

    def send_events(self, events: Iterable[Mapping[str, Any]], *, batch_size: int = 1000) -> SendReport:
        """Send events in batches of ``batch_size`` (at most the server's ``serve.max_batch``), each
        acknowledged only once committed. Events without ``event_id`` get a fresh UUID, and events without
        ``timestamp`` the current time, before the first attempt, so a re-sent batch is stored once."""
        report = SendReport()
        for offset, batch in _batches(events, batch_size):
            body, retries = self._call("POST", "/v1/events", idempotent=True, json=batch)
            report.retries += retries
            report.accepted += int(body["accepted"])
            report.rejected.extend({**r, "index": offset + int(r["index"])} for r in body["rejected"])
        return report

    def put_items(self, items: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Create or update catalogue items field by field (a missing field keeps its stored value)."""
        return self._json("PUT", "/v1/items", idempotent=True, json=list(items))

    def put_users(self, users: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Create or update users; attributes are merged key by key."""
        return self._json("PUT", "/v1/users", idempotent=True, json=list(users))

    def record_impressions(
        self, recommendation_id: str, user_id: str, item_ids: list[str], **extra: Any
    ) -> dict[str, Any]:
        """Record which recommended items were shown (positions from 1), for the impression report."""
        body = {"recommendation_id": recommendation_id, "user_id": user_id, "item_ids": item_ids, **extra}
        return self._json("POST", "/v1/impressions", idempotent=False, json=body)

    # -- reads ----------------------------------------------------------------------------------

    def recommend(self, user_id: str, k: int = 10, **params: Any) -> dict[str, Any]:
        """The user's top-k (``alpha``, ``diversity``, ``category``, ``min_price``… as query parameters)."""
        return self._json("GET", "/v1/recommendations", params={"user_id": user_id, "k": k, **params})

    def similar(self, item_id: str, k: int = 10) -> dict[str, Any]:
        """Items related to ``item_id``."""
        return self._json("GET", f"/v1/items/{_segment(item_id)}/similar", params={"k": k})

    def history(self, user_id: str, limit: int = 100) -> dict[str, Any]:
        """The user's newest stored events, newest first."""
        return self._json("GET", f"/v1/users/{_segment(user_id)}/history", params={"limit": limit})

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything stored about a user (a data-subject access request)."""
        return self._json("GET", f"/v1/users/{_segment(user_id)}/export")

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """Delete everything stored about a user (its receipt counts the rows removed)."""
        return self._json("DELETE", f"/v1/users/{_segment(user_id)}", idempotent=True)

    def impression_report(self, hours: float = 24.0) -> dict[str, Any]:
        """Per model version: impressions, clicks, purchases, CTR and conversion of shown items."""
        return self._json("GET", "/v1/impressions/report", params={"hours": hours})

    def models(self) -> dict[str, Any]:
        """The bundles of the served pipeline and the version in service."""
        return self._json("GET", "/v1/admin/models")

    def health(self) -> dict[str, Any]:
        """Whether the server answers (no key needed)."""
        return self._json("GET", "/health")

    # -- plumbing -------------------------------------------------------------------------------

    def _json(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> dict[str, Any]:
        body, _ = self._call(method, path, idempotent=idempotent, **kwargs)
        return body

    def _call(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> tuple[dict[str, Any], int]:
        """One request, retried as the module docstring says; its JSON body and the retries it took."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if not (idempotent or isinstance(exc, httpx.ConnectError)):
                    raise ClientError(f"{method} {path}: {exc!r} (not retried: it may have been processed)") from exc
                failure, wait = ClientError(f"{method} {path}: {exc!r}"), None
            else:
                retry = response.status_code in (RETRY_STATUS if idempotent else UNPROCESSED_STATUS)
                if response.is_success or not retry:
                    return _body(method, path, response), attempt
                failure, wait = _error(method, path, response), _retry_after(response)
            attempt += 1
            pause = wait if wait is not None else self._pause(attempt)
            if attempt > self.retries or time.monotonic() + pause - started > self.deadline:
                raise failure
            time.sleep(pause)

    def _pause(self, attempt: int) -> float:
        """Exponential backoff with full jitter: clients that failed together do not return together."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _batches(events: Iterable[Mapping[str, Any]], size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Batches of events ready to send (ids and times filled in), with the offset of each batch's first."""
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    batch: list[dict[str, Any]] = []
    offset = 0
    for event in events:
        filled = dict(event)
        filled.setdefault("event_id", uuid.uuid4().hex)
        filled.setdefault("timestamp", datetime.now(UTC).isoformat())
        batch.append(filled)
        if len(batch) == size:
            yield offset, batch
            offset, batch = offset + size, []
    if batch:
        yield offset, batch


def _segment(value: str) -> str:
    """An id as one URL path segment (a ``/`` or ``?`` in an id must not change the route)."""
    return quote(value, safe="")


def _body(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
    if not response.is_success:
        raise _error(method, path, response)
    body: dict[str, Any] = response.json()
    return body


def _error(method: str, path: str, response: httpx.Response) -> ClientError:
    """The server's structured error (``{error: {code, message, details}}``) as an exception."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        details = "; ".join(f"{d.get('field') or '-'}: {d['message']}" for d in error.get("details") or [])
    except (ValueError, KeyError, TypeError):
        code, message, details = None, response.text[:200], ""
    text = f"{method} {path}: {response.status_code} {message}" + (f" ({details})" if details else "")
    return ClientError(text, response.status_code, code)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked to wait (``Retry-After`` in seconds), if it said."""
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
