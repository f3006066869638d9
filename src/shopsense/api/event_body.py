"""The events of a ``POST /v1/events`` body, read where reading costs the server least.

Reading a body (the JSON, each event's shape, the rules of the settings, Arrow rows with their
keys) is interpreter work under the GIL, which the event loop, the journal and the store thread
need too: a 1,000-event batch holds it for milliseconds. So a small body is read on the event loop
(a thread hop would cost more than the read), a middling one in the thread pool, and a large one
in a separate process (``serve.parse_processes``) that has a GIL of its own: on two cores, batches
are then validated on one while the server acknowledges on the other. The rows come back as
Arrow buffers, which cross the pipe without a per-event cost, and refusals come back as the same
:class:`ApiError`, so the answer does not depend on where the body was read.

This module imports no model or store code: the reading process starts in about a second.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import pyarrow as pa
from starlette.concurrency import run_in_threadpool

from shopsense.api.errors import ApiError
from shopsense.domain import MAX_JSON_DEPTH, TOO_DEEP
from shopsense.services.event_check import EventChecker, Rejected
from shopsense.services.event_rows import Columns, keyed_table
from shopsense.settings import Settings

log = logging.getLogger(__name__)

THREAD_BYTES = 16_384
"""Bodies larger than this (about 100 events) are read off the event loop."""
PROCESS_BYTES = 65_536
"""Bodies larger than this (about 400 events) go to the reading processes, once they run."""

Read = tuple[pa.Table | Columns, list[Rejected]]
"""A body's accepted events (as store rows, or as columns for the writer to key) and its rejected items."""


def batch(body: Any, limit: int, what: str) -> list[Any]:
    """A single object or an array of objects, as a list; over ``limit`` is 413."""
    items = body if isinstance(body, list) else [body]
    if len(items) > limit:
        raise ApiError(413, "batch_too_large", f"{len(items):,} {what} in one request; the limit is {limit:,}")
    if not items:
        raise ApiError(422, "invalid_request", f"the request holds no {what}")
    return items


def nesting(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The nesting depth after each byte of a JSON text, and which bytes lie inside strings (whose
    brackets do not count): whole-array work, so that a deep body is measured before it is parsed."""
    text = np.frombuffer(body, np.uint8)
    toggles = np.zeros(text.size, np.int8)
    quotes = np.flatnonzero(text == 0x22)
    if quotes.size:
        slash = text == 0x5C
        last_other = np.maximum.accumulate(np.where(slash, -1, np.arange(text.size)))
        before = quotes - 1
        escapes = np.where(before >= 0, before - last_other[np.maximum(before, 0)], 0)
        toggles[quotes[escapes % 2 == 0]] = 1  # a quote after an odd run of backslashes is escaped
    inside = (np.cumsum(toggles) % 2).astype(bool)
    opens = ((text == 0x5B) | (text == 0x7B)) & ~inside
    closes = ((text == 0x5D) | (text == 0x7D)) & ~inside
    return np.cumsum(opens.astype(np.int32) - closes), inside


_KEY = re.compile(rb'"((?:[^"\\]|\\.)*)"\s*:\s*$')


def _deep_field(body: bytes, depth: np.ndarray, start: int, base: int, allowed: int) -> str | None:
    """The member of the item starting at ``start`` (nested ``base`` deep) that holds JSON deeper than allowed."""
    deep = start + int(np.argmax(depth[start:] > allowed))
    entered = np.flatnonzero(depth[start:deep] == base + 1)
    if not entered.size:
        return None
    member = start + int(entered[-1]) + 1  # where the member's value opens
    found = _KEY.search(body[max(start, member - 512) : member])
    if found is None:
        return None
    try:
        key = json.loads(b'"' + found.group(1) + b'"')
    except ValueError:
        return None
    return key if isinstance(key, str) else None


def load(body: bytes, max_batch: int, what: str) -> tuple[list[Any], dict[int, str | None]]:
    """The items of a JSON body (one object or an array of them) and, by position, those holding JSON
    nested deeper than :data:`MAX_JSON_DEPTH`, with the field that does (their place in the list is None).

    A body the parser reads (nearly all) comes back whole: the models and the event checks refuse what
    nests past the limit, each item on its own. Only a body too deep for the parser to recurse through
    is measured on its bytes (:func:`nesting`), its too-deep items left out and the others parsed on
    their own; one object that deep is refused with 422.
    """
    try:
        return batch(json.loads(body), max_batch, what), {}
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"the body is not valid JSON: {exc}") from exc
    except RecursionError:
        pass
    depth, inside = nesting(body)
    many = body.lstrip()[:1] == b"["
    allowed = MAX_JSON_DEPTH + 1 + many  # the item's own object, and the array around it
    if not many:
        raise too_deep(_deep_field(body, depth, 0, 0, allowed))
    text = np.frombuffer(body, np.uint8)
    opened = int(np.argmax(depth == 1))
    closed = opened + int(np.argmax(depth[opened:] == 0))
    if closed == opened or body[closed + 1 :].strip():
        _loads(body)  # malformed: say so as the parser would
        raise ApiError(422, "invalid_request", "the body is not valid JSON")
    commas = opened + np.flatnonzero(
        (text[opened:closed] == 0x2C) & (depth[opened:closed] == 1) & ~inside[opened:closed]
    )
    bounds = [opened, *commas.tolist(), closed]
    if len(bounds) - 1 > max_batch:
        batch([None] * (len(bounds) - 1), max_batch, what)  # the same 413
    items: list[Any] = []
    deep: dict[int, str | None] = {}
    for index, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if int(depth[lo + 1 : hi].max(initial=0)) > allowed:
            deep[index] = _deep_field(body, depth, lo + 1, 1, allowed)
            items.append(None)
        else:
            items.append(_loads(body[lo + 1 : hi]))
    return items, deep


def too_deep(field: str | None) -> ApiError:
    """The 422 for a body of one record (not an array) that holds JSON nested too deep."""
    return one_refused(Rejected(0, TOO_DEEP, field))


def one_refused(rejected: Rejected) -> ApiError:
    """The refusal of a body of one record (not an array): with nothing else in the request to commit,
    the record's refusal is the request's (a batch lists each refused record and commits the rest). 422
    for a record of the wrong shape, 400 for a well-formed one a rule of the settings refuses."""
    where = f"{rejected.field}: " if rejected.field else ""
    return ApiError(
        400 if rejected.rule else 422,
        "invalid_request",
        where + rejected.reason,
        [{"field": rejected.field or "", "message": rejected.reason}],
    )


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_request", f"the body is not valid JSON: {exc}") from exc


def read(checker: EventChecker, body: bytes, max_batch: int) -> Read:
    """The body's accepted and rejected events: straight from the bytes when all are valid (nearly
    always), else parsed first so that each event gets its own verdict."""
    parsed = checker.parse(body)
    if parsed is None or parsed[0].num_rows + len(parsed[1]) > max_batch:
        parsed = _validated(checker, *load(body, max_batch, "events"))
    refused = parsed[1]
    if refused and body.lstrip()[:1] != b"[":
        raise one_refused(refused[0])
    return parsed


def _validated(checker: EventChecker, raw: list[Any], deep: dict[int, str | None]) -> Read:
    """:meth:`EventChecker.validate` on the parsed events, those found too deep to parse rejected."""
    if not deep:
        return checker.validate(raw)
    kept = [i for i in range(len(raw)) if i not in deep]
    rows, rejected = checker.validate([raw[i] for i in kept])
    moved = [Rejected(kept[r.index], r.reason, r.field) for r in rejected]
    refused = [Rejected(i, TOO_DEEP, field) for i, field in deep.items()]
    return rows, sorted([*moved, *refused], key=lambda r: r.index)


class EventReader:
    """Reads event bodies on the event loop, in the thread pool or in the reading processes, by size.

    The processes start with the first body large enough for them, and bodies are read in the
    thread pool until they run, so no request waits for a start. Should a process die, the body
    it held is read again here and a new one is started: a client never sees the loss.
    """

    def __init__(self, settings: Settings, checker: EventChecker) -> None:
        self.settings = settings
        self.checker = checker
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._started: Future[None] | None = None

    async def read(self, body: bytes) -> Read:
        """The accepted and rejected events of ``body``; :class:`ApiError` when it is not events at all."""
        limit = self.settings.serve.max_batch
        if len(body) <= THREAD_BYTES:
            return read(self.checker, body, limit)
        pool = self.ready() if len(body) > PROCESS_BYTES else None
        if pool is not None:
            try:
                return await asyncio.wrap_future(pool.submit(_read_apart, body, limit))
            except BrokenProcessPool:
                log.warning("an event reading process stopped; reading its body here and starting another")
                self._discard(pool)
        return await run_in_threadpool(read, self.checker, body, limit)

    def ready(self) -> ProcessPoolExecutor | None:
        """The reading processes when they run; else None, and they are started if none are starting.

        None for good when ``serve.parse_processes`` is 0 or they failed to start (which is logged).
        """
        processes = self.settings.serve.parse_processes
        if processes == 0:
            return None
        with self._lock:
            if self._started is None:
                self._pool = ProcessPoolExecutor(
                    processes,
                    mp_context=multiprocessing.get_context("spawn"),  # the server's threads must not be forked
                    initializer=_start_reading,
                    initargs=(self.settings, os.getpid()),
                )
                self._started = self._pool.submit(_started)
                self._started.add_done_callback(_log_failed_start)
            if not self._started.done() or self._started.exception() is not None:
                return None
            return self._pool

    def close(self) -> None:
        """Stop the reading processes (bodies they hold are read first)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool, so that the next large body starts a new one."""
        with self._lock:
            if self._pool is pool:
                self._pool, self._started = None, None
        pool.shutdown(wait=False)


def _log_failed_start(started: Future[None]) -> None:
    failed = started.exception()
    if failed is not None:
        log.error("event reading processes failed to start; reading every body in the server", exc_info=failed)


# -- in the reading process ---------------------------------------------------------------------

_CHECKER: EventChecker | None = None


def _start_reading(settings: Settings, server: int) -> None:
    """Set up a reading process: its own checker, deaf to Ctrl-C (the server stops it), and gone when the server is."""
    global _CHECKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CHECKER = EventChecker(settings)
    threading.Thread(target=_exit_with, args=(server,), name="shopsense-watch-server", daemon=True).start()


def _exit_with(server: int) -> None:
    """End this process once the server is gone (killed, so it could not stop it)."""
    while os.getppid() == server:
        time.sleep(1.0)
    os._exit(0)


def _started() -> None:
    """Run first in a new pool: it returns once a process has started and set up."""


def _read_apart(body: bytes, max_batch: int) -> tuple[pa.Table, list[Rejected]]:
    """:func:`read` in a reading process; columns are keyed here too, to send Arrow rather than lists."""
    assert _CHECKER is not None, "a reading process runs _start_reading first"
    rows, rejected = read(_CHECKER, body, max_batch)
    return (keyed_table([rows]) if isinstance(rows, Columns) else rows), rejected
