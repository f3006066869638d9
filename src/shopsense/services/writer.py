"""One writer thread for the store: group commit for many small concurrent writes.

Every commit costs a WAL flush, so a thousand clients each posting one event would crawl if each
got its own transaction. Requests hand their (already validated) rows to this thread and wait;
the thread takes whatever arrived within ``wait`` seconds, writes it in one transaction and only
then releases the waiters: an acknowledged event is always committed. Other store operations
(erasure, catalogue upserts, reads) go through the same thread, so they are ordered with the
writes and the embedded database is only ever touched by one thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopsense.services.event_rows import Columns, keyed_table
from shopsense.store.base import Store, WriteResult

logger = logging.getLogger(__name__)

MAX_GROUP_ROWS = 100_000
LOG_SECONDS = 60.0
"""The import log gets one row per this many seconds of commits (and one at close), not one per commit."""


@runtime_checkable
class RemembersKeys(Protocol):
    """A store that can keep its stored keys and ids in memory for a process that is its only writer."""

    def remember_keys(self) -> None:
        """From now on, check and extend the remembered keys instead of scanning the tables."""
        ...


@dataclass
class _Job:
    future: Future[Any]
    events: pa.Table | Columns | None = None
    call: Callable[[Store], Any] | None = None
    stop: bool = False


class StoreWriter:
    """Serialises all store access on one thread; event appends are grouped into shared commits."""

    def __init__(self, store: Store, wait: float, on_commit: Callable[[pa.Table], None] | None = None) -> None:
        self.store = store
        self.wait = wait
        self.on_commit = on_commit
        if isinstance(store, RemembersKeys):  # this thread is the store's only writer from here on
            store.remember_keys()
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._unlogged = _Unlogged()
        self._thread = threading.Thread(target=self._run, name="shopsense-store-writer", daemon=True)
        self._thread.start()

    def append(self, events: pa.Table | Columns) -> Future[Any]:
        """Queue keyed event rows (store EVENT_COLUMNS), or events with ids to be keyed and converted
        together with the others of their commit; the future resolves once they are committed."""
        job = _Job(Future(), events=events)
        self._queue.put(job)
        return job.future

    def call(self, fn: Callable[[Store], Any]) -> Future[Any]:
        """Run ``fn(store)`` on the writer thread, after every write queued before it."""
        job = _Job(Future(), call=fn)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish queued work, then stop."""
        self._queue.put(_Job(Future(), stop=True))
        self._thread.join()

    def _run(self) -> None:
        carried: _Job | None = None
        while True:
            job = carried or self._queue.get()
            carried = None
            if job.stop:
                self._log(force=True)
                return
            if job.call is not None:
                _settle(job.future, job.call, self.store)
                continue
            group, rows = [job], _rows(job)
            # Sleep through the window, then take what came: waking for each arrival would cost a
            # thread switch (and a fight for the GIL with the event loop) per request.
            time.sleep(self.wait)
            while rows < MAX_GROUP_ROWS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt.events is None:  # a call or the stop: it runs after this commit
                    carried = nxt
                    break
                group.append(nxt)
                rows += _rows(nxt)
            self._commit(group)

    def _commit(self, group: list[_Job]) -> None:
        try:
            tables = [job.events for job in group if isinstance(job.events, pa.Table)]
            columns = [job.events for job in group if isinstance(job.events, Columns)]
            combined = _first_of_each_key(pa.concat_tables([*tables, *([keyed_table(columns)] if columns else [])]))
            users = pc.unique(combined.column("user_id"))
            items = pc.unique(combined.column("item_id"))
            result = self.store.append_events(combined, users, items, "api", log=False)
        except BaseException as exc:  # every waiter learns of the failure; nothing was acknowledged
            for job in group:
                job.future.set_exception(exc)
            return
        if self.on_commit is not None:
            self.on_commit(combined)
        for job in group:
            job.future.set_result(result)
        self._unlogged.add(result)
        self._log(force=False)

    def _log(self, *, force: bool) -> None:
        """Summarise the commits since the last import-log row, if a row is due."""
        done = self._unlogged
        if done.received and (force or time.monotonic() - done.since >= LOG_SECONDS):
            self._unlogged = _Unlogged()
            try:
                self.store.log_import(done.batch, "events", "api", done.received, done.written)
            except Exception:  # the log is a summary; the events themselves are committed
                logger.exception("could not write the import log row for %d API events", done.received)


@dataclass
class _Unlogged:
    """Counts of the commits the import log does not show yet."""

    since: float = field(default_factory=time.monotonic)
    batch: int = 0
    received: int = 0
    written: int = 0

    def add(self, result: WriteResult) -> None:
        self.batch = result.batch_id
        self.received += result.received
        self.written += result.written


def _rows(job: _Job) -> int:
    return job.events.num_rows if job.events is not None else 0


def _settle(future: Future[Any], fn: Callable[[Store], Any], store: Store) -> None:
    try:
        future.set_result(fn(store))
    except BaseException as exc:
        future.set_exception(exc)


def _first_of_each_key(table: pa.Table) -> pa.Table:
    """Two requests in one commit may carry the same event: keep its first copy."""
    high = table.column("key_hi").to_numpy()
    if len(np.unique(high)) == len(high):  # the usual case, told 20x faster than by comparing whole keys
        return table
    keys = np.stack([high, table.column("key_lo").to_numpy()], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    return table if len(first) == table.num_rows else table.take(pa.array(np.sort(first)))
