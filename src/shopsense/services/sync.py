"""Keeps one API replica's memory in step with the others that share its PostgreSQL store.

Every replica answers from its own in-memory histories (:class:`~shopsense.services.live.LiveHistories`)
and catalogue availability, so an event, an erasure or a shelf change committed through another replica
must reach this one's memory too. A thread reads the store's feed (:class:`~shopsense.store.base.ReplicaFeed`)
every ``serve.sync_ms``: the events, erasure tombstones and changed items of the transactions that ended
since the last look, by transaction id.

Each write is applied to memory exactly once, by whoever sees it first. The replica's own writes are
applied by its writer thread right after their commit (:meth:`ReplicaSync.local`); the feed shows them
again later and skips their transaction ids. Should the feed pass a transaction before its writer got
there, the feed applied it and the writer skips it instead (the cursor says it was read). The startup
snapshot holds exactly the transactions its cursor counts as read, so nothing is doubled or missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopsense.services.live import LiveHistories
from shopsense.store.base import FeedChanges, FeedStart, ReplicaFeed, Store

log = logging.getLogger("shopsense.serve")


class ReplicaSync:
    """The feed thread of one replica: applies other replicas' events and erasures to this one's memory."""

    def __init__(
        self,
        open_feed: Callable[[], Store],
        start: FeedStart,
        live: LiveHistories,
        erase: Callable[[str], None],
        refresh: Callable[[pa.Table], None],
        every: float,
    ) -> None:
        """``open_feed`` opens this thread's own store handle (the writer's handle is single-threaded);
        ``erase`` drops an erased user from everything in memory (histories, cached answers); ``refresh``
        applies items' current availability and stock."""
        self._open_feed = open_feed
        self._store: Store | None = None
        self._cursor = start.cursor
        self._known: set[int] = set()
        """Transactions applied here that the feed has not passed yet: it skips them when it does."""
        self._live, self._erase, self._refresh, self._every = live, erase, refresh, every
        self._lock = threading.Lock()
        """Held while a write is applied to memory, so a feed window and a local commit never both apply it."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shopsense-replica-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def local(self, txid: int | None, apply: Callable[[], None]) -> None:
        """Apply a write this replica committed in transaction ``txid``, unless the feed applied it already."""
        with self._lock:
            if txid is not None:
                if self._cursor.passed(txid) or txid in self._known:
                    return
                self._known.add(txid)
            apply()

    def poll(self) -> None:
        """Read one feed window on this thread's handle and apply what this replica does not know yet.

        The window is read under the lock: a local commit that ends after the window's snapshot is applied
        only after the window, so rebuilding an erased user's history from that snapshot can never drop it.
        """
        if self._store is None:
            self._store = self._open_feed()
        store = self._store
        if not isinstance(store, ReplicaFeed):
            raise TypeError(f"{type(store).__name__} has no replica feed")
        with self._lock:
            changes = store.changes_since(self._cursor)
            self._apply(changes)
            self._cursor = changes.next_cursor
            self._known = {txid for txid in self._known if not self._cursor.passed(txid)}
        if changes.items.num_rows:  # idempotent: the current values, whoever wrote them
            self._refresh(changes.items)

    def _apply(self, changes: FeedChanges) -> None:
        """Apply a window's unknown events, then rebuild every user erased in it (under the lock).

        An erased user's history is replaced by what the window's snapshot holds of them: transaction ids
        need not follow commit order, and this replica may have applied its own writes or erasure of that
        user in either order against the window, but the snapshot is the committed truth. Erasures are
        applied even when this replica made them (rebuilding is idempotent).
        """
        known = np.fromiter(self._known, np.int64, len(self._known))
        events = changes.events
        erased = pa.array(sorted(set(changes.erasures.column("user_id").to_pylist())), pa.string())
        fresh = ~np.isin(events.column("txid").to_numpy(), known)
        fresh &= ~pc.is_in(events.column("user_id"), value_set=erased).to_numpy(zero_copy_only=False)
        if fresh.any():
            self._live.append(events.filter(pa.array(fresh)))
        for user in erased.to_pylist():
            self._erase(user)
        if changes.erased_histories.num_rows:
            self._live.append(changes.erased_histories)

    def _run(self) -> None:
        """Poll until closed; a failure (the database restarting) is logged once and retried on a new handle."""
        failing = False
        while not self._stop.wait(self._every):
            try:
                self.poll()
            except Exception as exc:
                if not failing:
                    log.warning("replica sync failed, retrying every %.0f ms: %s", self._every * 1000, exc)
                failing = True
                self._drop_store()
                continue
            if failing:
                log.info("replica sync resumed")
                failing = False

    def _drop_store(self) -> None:
        """Let go of a handle that failed: its connection may be dead; the next poll opens a fresh one."""
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # a dead connection may refuse even to close
                log.debug("closing the replica sync's store failed", exc_info=True)

    def close(self) -> None:
        """Stop the thread and close its store handle."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._drop_store()
