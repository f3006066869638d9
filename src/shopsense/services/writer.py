"""One writer thread for the store: group commit for many small concurrent writes.

Every commit costs a log flush, so a thousand clients each posting one event would crawl if each
got its own transaction. Requests hand their (already validated) rows to this thread and wait;
the thread takes whatever arrived within ``wait`` seconds and makes it durable at once, and only
then releases the waiters: an acknowledged event is never lost.

With a journal (a store on disk), durable means synced to the journal; the events are written
into the store later, many groups in one transaction: after ``APPLY_SECONDS``, at
``APPLY_ROWS`` rows, and always before any other store operation runs, so that reads,
erasures and exports see every acknowledged event. Without one, each group is committed to the
store directly. Other store operations (erasure, catalogue upserts, reads) go through the same
thread, so they are ordered with the writes and the embedded database is only ever touched by
one thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from shopsense.services.event_rows import ALONE_ROWS, Columns, keyed_table
from shopsense.store.base import Store, WriteResult
from shopsense.store.journal import Journal, first_of_each_key, remove

logger = logging.getLogger(__name__)

MAX_GROUP_ROWS = 100_000
LOG_SECONDS = 60.0
"""The import log gets one row per this many seconds of commits (and one at close), not one per commit."""
APPLY_SECONDS = 1.0
APPLY_ROWS = 50_000
"""Journaled events are written into the store once the oldest has waited this long, or once this many wait."""


@dataclass(frozen=True)
class Journaled:
    """What an append through the journal did: ``rows`` events synced to it, not yet in the store."""

    rows: int


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
    apply: bool = False


class StoreWriter:
    """Serialises all store access on one thread; event appends are grouped into shared commits.

    With a journal, a second thread makes event groups durable in it and acknowledges them, so that
    acknowledgements never wait on a write into the store.
    """

    def __init__(
        self,
        store: Store,
        wait: float,
        on_commit: Callable[[pa.Table, Any], None] | None = None,
        journal: Journal | None = None,
    ) -> None:
        """``on_commit`` sees every group once it is durable, with what made it so (the commit's
        :class:`WriteResult`, whose ``txid`` tells a replica's own writes apart, or :class:`Journaled`);
        ``journal``, when given, is where it is made durable (the writer closes it)."""
        self.store = store
        self.wait = wait
        self.on_commit = on_commit
        self.journal = journal
        if isinstance(store, RemembersKeys):  # the store thread is the store's only writer from here on
            store.remember_keys()
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._events: queue.Queue[_Job] = queue.Queue() if journal is not None else self._queue
        self._unlogged = _Unlogged()
        self._lock = threading.Lock()
        """Held while a group is journaled and made pending, and while the journal is sealed."""
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_since = 0.0
        self._unwritten: list[pa.Table] = []
        self._sealed: list[Path] = []
        self._thread = threading.Thread(target=self._run, name="shopsense-store-writer", daemon=True)
        self._thread.start()
        self._journaling: threading.Thread | None = None
        if journal is not None:
            self._journaling = threading.Thread(target=self._run_journal, name="shopsense-journal", daemon=True)
            self._journaling.start()

    def append(self, events: pa.Table | Columns) -> Future[Any]:
        """Queue keyed event rows (store EVENT_COLUMNS), or events with ids to be keyed and converted
        together with the others of their commit; the future resolves once they are durable: to a
        :class:`Journaled` with a journal, else to the commit's :class:`WriteResult`."""
        job = _Job(Future(), events=events)
        self._events.put(job)
        return job.future

    def call(self, fn: Callable[[Store], Any]) -> Future[Any]:
        """Run ``fn(store)`` on the store thread, once every event acknowledged before is in the store."""
        job = _Job(Future(), call=fn)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish queued work, then stop."""
        if self._journaling is not None:
            self._events.put(_Job(Future(), stop=True))
            self._journaling.join()
        self._queue.put(_Job(Future(), stop=True))
        self._thread.join()

    def _run(self) -> None:
        """The store thread: calls, journaled events written in, and (without a journal) event groups."""
        carried: _Job | None = None
        while True:
            job = carried or self._next()
            carried = None
            if job is None or job.apply:  # journaled events waited long enough, or many wait
                self._apply()
            elif job.stop:
                self._apply()
                self._log(force=True)
                if self.journal is not None:
                    self.journal.close()
                return
            elif job.call is not None:
                failed = self._apply()
                if failed is not None:  # the call would miss acknowledged events (or erase too little)
                    job.future.set_exception(failed)
                else:
                    _settle(job.future, job.call, self.store)
            else:
                group, carried = self._gather(job, self._queue)
                self._commit(group)

    def _run_journal(self) -> None:
        """The journal thread: event groups made durable in the journal, then acknowledged."""
        carried: _Job | None = None
        while True:
            job = carried or self._events.get()
            if job.stop:
                return
            group, carried = self._gather(job, self._events)
            self._journal(group)

    def _gather(self, job: _Job, jobs: queue.Queue[_Job]) -> tuple[list[_Job], _Job | None]:
        """``job`` and the event jobs queued within the window after it; a job of another kind that
        came in the window is returned to run after the group."""
        group, rows = [job], _rows(job)
        if rows < ALONE_ROWS:
            # Sleep through the window, then take what came: waking for each arrival would cost a
            # thread switch (and a fight for the GIL with the event loop) per request.
            time.sleep(self.wait)
        while rows < MAX_GROUP_ROWS:
            try:
                nxt = jobs.get_nowait()
            except queue.Empty:
                break
            if nxt.events is None:
                return group, nxt
            group.append(nxt)
            rows += _rows(nxt)
        return group, None

    def _next(self) -> _Job | None:
        """The next job, or None once journaled events have waited ``APPLY_SECONDS`` without one.

        An idle thread wakes every ``APPLY_SECONDS`` to look: events journaled while it waits must not
        stay in memory (a small table per request) until some other job arrives or ``APPLY_ROWS`` pile up.
        """
        while True:
            with self._lock:
                left = self._pending_since + APPLY_SECONDS - time.monotonic() if self._pending else None
            if left is not None and left <= 0:
                return None
            try:
                return self._queue.get(timeout=APPLY_SECONDS if left is None else left)
            except queue.Empty:
                continue

    def _commit(self, group: list[_Job]) -> None:
        """Without a journal: commit the group to the store, then acknowledge it."""
        self._settle_group(group, self._write)

    def _journal(self, group: list[_Job]) -> None:
        """With a journal: sync the group to it and make it pending for the store thread, then acknowledge it."""

        def durable(events: pa.Table) -> Journaled:
            assert self.journal is not None
            with self._lock:
                self.journal.append(events)
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending.append(events)
                self._pending_rows += events.num_rows
                due = self._pending_rows >= APPLY_ROWS
            if due:
                self._queue.put(_Job(Future(), apply=True))
            return Journaled(events.num_rows)

        self._settle_group(group, durable)

    def _settle_group(self, group: list[_Job], durable: Callable[[pa.Table], Any]) -> None:
        """Key the group's events as one table, make them ``durable``, then tell every waiter."""
        try:
            tables = [job.events for job in group if isinstance(job.events, pa.Table)]
            columns = [job.events for job in group if isinstance(job.events, Columns)]
            combined = first_of_each_key(pa.concat_tables([*tables, *([keyed_table(columns)] if columns else [])]))
            result = durable(combined)
        except BaseException as exc:  # every waiter learns of the failure; nothing was acknowledged
            for job in group:
                job.future.set_exception(exc)
            return
        if self.on_commit is not None:
            self.on_commit(combined, result)
        for job in group:
            job.future.set_result(result)

    def _write(self, events: pa.Table) -> WriteResult:
        """Commit keyed events to the store (those it holds already are skipped)."""
        users, items = pc.unique(events.column("user_id")), pc.unique(events.column("item_id"))
        result = self.store.append_events(events, users, items, "api", log=False)
        self._unlogged.add(result)
        self._log(force=False)
        return result

    def _apply(self) -> Exception | None:
        """Write every journaled event into the store in one commit, then delete the journal files
        that held them (sealed first, so that new events go on into a fresh file meanwhile).

        Returns the error when that failed: the events then stay journaled, for a later apply or
        the replay at the next start.
        """
        if self.journal is None:
            return None
        try:
            with self._lock:
                if self._pending:
                    self._sealed.append(self.journal.seal())
                    self._unwritten.extend(self._pending)
                    self._pending, self._pending_rows = [], 0
            if not self._unwritten:
                return None
            self._write(first_of_each_key(pa.concat_tables(self._unwritten)))
            remove(self._sealed)  # before forgetting them: a retry then rewrites nothing twice
            self._unwritten, self._sealed = [], []
        except Exception as exc:
            logger.exception("could not write %d journaled events into the store", sum(map(len, self._unwritten)))
            return exc
        return None

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
        # Break the cycle future -> exc -> traceback -> this frame -> future, as concurrent.futures
        # does. An error chained to a pydantic ValidationError could never be collected otherwise:
        # pydantic-core does not show the collector the ValueError it keeps for its message, so the
        # cycle, and the store that the call's frames hold, outlived DuckDB's bindings at exit
        # ("nanobind: leaked ... DuckDBPyConnection").
        del future
