"""Hot state of the online service: every user's events in memory, newest included.

A recommendation request must see the event posted a moment ago without a database round
trip, so the server loads the event history once (user, item, type, time, sorted by user) and
appends accepted events to a small per-user tail. Reads slice the sorted table (zero copy) and
add the tail; the tail is folded into the table when it grows, so memory stays one copy.
Erasure removes a user from both at once.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COLUMNS = ("user_id", "item_id", "type", "timestamp")
_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("type", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
    ]
)
FOLD_AT = 200_000
"""Tail events kept apart before they are merged into the sorted table."""


class LiveHistories:
    """Per-user event histories for the serving path, safe to read while events arrive."""

    def __init__(self, events: pa.Table) -> None:
        self._lock = threading.Lock()
        self._tail: dict[str, list[pa.Table]] = defaultdict(list)
        self._tail_rows = 0
        self._versions: dict[str, int] = defaultdict(int)
        self._set_base(_normalise(events))

    def _set_base(self, table: pa.Table) -> None:
        order = pc.sort_indices(table, [("user_id", "ascending"), ("timestamp", "ascending")])
        base = table.take(order).combine_chunks()
        users = base.column("user_id").to_numpy(zero_copy_only=False)
        if len(users):
            starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
            ends = np.r_[starts[1:], len(users)]
            self._offsets = {str(users[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}
        else:
            self._offsets = {}
        self._base = base

    def history(self, user_id: str) -> pa.Table:
        """The user's events, oldest first (an unknown user has none)."""
        with self._lock:
            start, end = self._offsets.get(user_id, (0, 0))
            parts = [self._base.slice(start, end - start), *self._tail.get(user_id, ())]
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def count(self, user_id: str) -> int:
        """How many events the user has: a precomputed answer holds while this is what it was computed from."""
        with self._lock:
            start, end = self._offsets.get(user_id, (0, 0))
            return end - start + sum(int(part.num_rows) for part in self._tail.get(user_id, ()))

    def version(self, user_id: str) -> int:
        """Changes whenever the user's history does: a cache key for their recommendations."""
        return self._versions.get(user_id, 0)

    def append(self, events: pa.Table) -> None:
        """Add accepted events (any users); they are visible to the next read."""
        events = _normalise(events)
        users = events.column("user_id").to_numpy(zero_copy_only=False)
        order = np.argsort(users, kind="stable")
        users = users[order]
        events = events.take(order)
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], dtype=int)
        ends = np.r_[starts[1:], len(users)]
        with self._lock:
            for start, end in zip(starts, ends, strict=True):
                user = str(users[start])
                self._tail[user].append(events.slice(int(start), int(end - start)))
                self._versions[user] += 1
            self._tail_rows += len(users)
            if self._tail_rows >= FOLD_AT:
                self._fold()

    def _fold(self) -> None:
        tails = [t for parts in self._tail.values() for t in parts]
        self._set_base(pa.concat_tables([self._base, *tails]))
        self._tail.clear()
        self._tail_rows = 0

    def erase(self, user_id: str) -> None:
        """Forget the user everywhere in memory."""
        with self._lock:
            if user_id in self._offsets:
                keep = pc.not_equal(self._base.column("user_id"), user_id)
                self._tail.pop(user_id, None)
                self._set_base(self._base.filter(keep))
            self._tail.pop(user_id, None)
            self._versions[user_id] += 1

    def popular(self, since: pa.Scalar | None, k: int) -> list[str]:
        """Most frequent items in events at or after ``since`` (all events when None): the no-model fallback."""
        with self._lock:
            tables = [self._base, *(t for parts in self._tail.values() for t in parts)]
        table = pa.concat_tables(tables)
        if since is not None:
            table = table.filter(pc.greater_equal(table.column("timestamp"), since))
        if table.num_rows == 0:
            return []
        counts = pc.value_counts(table.column("item_id"))
        values, freq = counts.field("values"), counts.field("counts").to_numpy()
        order = np.lexsort((np.arange(len(freq)), -freq))[:k]
        return [str(v) for v in values.take(pa.array(order)).to_pylist()]


def _normalise(events: pa.Table) -> pa.Table:
    table = events.select(list(COLUMNS))
    return table.cast(_SCHEMA) if table.schema != _SCHEMA else table
