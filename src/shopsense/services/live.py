"""Hot state of the online service: every user's events in memory, newest included.

A recommendation request must see the event posted a moment ago without a database round
trip, so the server loads the event history once (user, item, type, time, sorted by user) and
keeps every accepted event after it in a compact tail: a few numpy columns of codes, with each
user's tail events chained newest to oldest. Appending a commit is a handful of vectorised
operations whatever its users, and the tail is never merged into the sorted table, so the
writer never stalls on a re-sort. Reads slice the sorted table (zero copy) and add the user's
chained tail events. Erasure removes a user from both at once.
"""

from __future__ import annotations

import sys
import threading
from itertools import repeat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COLUMNS = ("user_id", "item_id", "type", "timestamp")
_TS = pa.timestamp("us", tz="UTC")
_SCHEMA = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("type", pa.string()), ("timestamp", _TS)])
_NONE = -1


class _Codes:
    """Dense codes for strings (users, items, event types), numbered as first seen."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self.names: list[str] = []
        self._strings = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the dictionary, the list of names and the name strings (the codes are small ints)."""
        return sys.getsizeof(self._index) + sys.getsizeof(self.names) + self._strings

    def get(self, value: str) -> int | None:
        return self._index.get(value)

    def codes(self, values: list[str]) -> np.ndarray:
        """The code of each value, new values numbered on from the last."""
        found = np.fromiter(map(self._index.get, values, repeat(_NONE)), np.int64, len(values))
        missing = np.flatnonzero(found == _NONE)
        if len(missing):
            new = [v for v in dict.fromkeys(values[i] for i in missing) if v not in self._index]
            self._index.update(zip(new, range(len(self.names), len(self.names) + len(new)), strict=True))
            self.names.extend(new)
            self._strings += sum(map(sys.getsizeof, new))
            found[missing] = [self._index[values[i]] for i in missing]
        return found


class _Grown:
    """A numpy column that doubles its capacity as it fills: appends copy only what they add."""

    def __init__(self, dtype: type, fill: int) -> None:
        self.values: np.ndarray = np.full(1024, fill, dtype)
        self._fill = fill

    def reserve(self, size: int) -> None:
        if size > len(self.values):
            grown = np.full(max(size, 2 * len(self.values)), self._fill, self.values.dtype)
            grown[: len(self.values)] = self.values
            self.values = grown


class LiveHistories:
    """Per-user event histories for the serving path, safe to read while events arrive."""

    def __init__(self, events: pa.Table) -> None:
        self._lock = threading.Lock()
        self._users, self._items, self._types = _Codes(), _Codes(), _Codes()
        # per user code
        self._start, self._end = _Grown(np.int64, 0), _Grown(np.int64, 0)
        self._last, self._tail_count, self._versions = _Grown(np.int64, _NONE), _Grown(np.int64, 0), _Grown(np.int64, 0)
        # per tail row
        self._prev, self._item = _Grown(np.int64, _NONE), _Grown(np.int64, _NONE)
        self._type, self._time = _Grown(np.int16, 0), _Grown(np.int64, 0)
        self._rows = 0
        self._set_base(_normalise(events))

    def _set_base(self, table: pa.Table) -> None:
        """Sort the loaded events by user and time and note where each user's run starts and ends."""
        order = pc.sort_indices(table, [("user_id", "ascending"), ("timestamp", "ascending")])
        self._base = table.take(order).combine_chunks()
        users = self._base.column("user_id")
        if not len(users):
            return
        runs = pc.run_end_encode(users.combine_chunks())
        ends = runs.run_ends.to_numpy().astype(np.int64)
        codes = self._users.codes(runs.values.to_pylist())
        self._per_user(len(self._users.names))
        self._start.values[codes] = np.r_[0, ends[:-1]]
        self._end.values[codes] = ends

    def _per_user(self, size: int) -> None:
        for column in (self._start, self._end, self._last, self._tail_count, self._versions):
            column.reserve(size)

    def _tail_rows(self, code: int) -> np.ndarray:
        """The user's tail rows, oldest first (under the lock)."""
        rows = []
        row = int(self._last.values[code])
        while row != _NONE:
            rows.append(row)
            row = int(self._prev.values[row])
        return np.array(rows[::-1], np.int64)

    def history(self, user_id: str) -> pa.Table:
        """The user's events, oldest first (an unknown user has none)."""
        with self._lock:
            code = self._users.get(user_id)
            if code is None:
                return self._base.slice(0, 0)
            start, end = int(self._start.values[code]), int(self._end.values[code])
            base = self._base.slice(start, end - start)
            rows = self._tail_rows(code)
            if not len(rows):
                return base
            tail = pa.table(
                [
                    pa.array(list(repeat(user_id, len(rows))), pa.string()),
                    pa.array(list(map(self._items.names.__getitem__, self._item.values[rows])), pa.string()),
                    pa.array(list(map(self._types.names.__getitem__, self._type.values[rows])), pa.string()),
                    pa.array(self._time.values[rows], pa.timestamp("us")).view(_TS),
                ],
                schema=_SCHEMA,
            )
        return pa.concat_tables([base, tail])

    def count(self, user_id: str) -> int:
        """How many events the user has: a precomputed answer holds while this is what it was computed from."""
        code = self._users.get(user_id)  # no lock: on the event loop, and each value is written whole
        if code is None:
            return 0
        return int(self._end.values[code] - self._start.values[code] + self._tail_count.values[code])

    def version(self, user_id: str) -> int:
        """Changes whenever the user's history does: a cache key for their recommendations."""
        code = self._users.get(user_id)
        return 0 if code is None else int(self._versions.values[code])

    def held(self) -> tuple[int, int, int]:
        """Event rows held in memory (erased tail rows keep their slot), the bytes of the arrays holding
        them and the per-user columns, and the bytes of the id-to-code dictionaries."""
        with self._lock:
            users = (self._start, self._end, self._last, self._tail_count, self._versions)
            grown = (*users, self._prev, self._item, self._type, self._time)
            codes = self._users.nbytes + self._items.nbytes + self._types.nbytes
            return self._base.num_rows + self._rows, self._base.nbytes + sum(c.values.nbytes for c in grown), codes

    def append(self, events: pa.Table) -> None:
        """Add accepted events (any users); they are visible to the next read.

        Each event is chained to the user's previous one: sorted by user, an event's predecessor is
        the one before it in its run, or the user's last event for the first of the run.
        """
        events = _normalise(events)
        n = events.num_rows
        if not n:
            return
        times = events.column("timestamp").cast(pa.int64()).to_numpy()
        users, items, types = (events.column(name).to_pylist() for name in ("user_id", "item_id", "type"))
        with self._lock:
            codes = self._users.codes(users)
            self._per_user(len(self._users.names))
            rows = np.arange(self._rows, self._rows + n)
            for column in (self._prev, self._item, self._type, self._time):
                column.reserve(self._rows + n)
            self._item.values[rows] = self._items.codes(items)
            self._type.values[rows] = self._types.codes(types)
            self._time.values[rows] = times
            order = np.argsort(codes, kind="stable")
            sorted_codes, sorted_rows = codes[order], rows[order]
            first = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
            last = np.r_[first[1:], True]
            self._prev.values[sorted_rows] = np.where(
                first, self._last.values[sorted_codes], np.r_[_NONE, sorted_rows[:-1]]
            )
            self._last.values[sorted_codes[last]] = sorted_rows[last]
            self._tail_count.values[sorted_codes[last]] += np.diff(np.r_[np.flatnonzero(first), n])
            self._versions.values[sorted_codes[first]] += 1
            self._rows += n

    def erase(self, user_id: str) -> None:
        """Forget the user everywhere in memory: their loaded events and their tail events' values."""
        with self._lock:
            code = self._users.get(user_id)
            if code is None:
                return
            start, end = int(self._start.values[code]), int(self._end.values[code])
            if end > start:
                self._base = pa.concat_tables([self._base.slice(0, start), self._base.slice(end)]).combine_chunks()
                for column in (self._start, self._end):
                    column.values[column.values >= end] -= end - start
                self._end.values[code] = start
            rows = self._tail_rows(code)
            self._item.values[rows], self._time.values[rows] = _NONE, 0
            self._last.values[code], self._tail_count.values[code] = _NONE, 0
            self._versions.values[code] += 1

    def popular(self, since: pa.Scalar | None, k: int) -> list[str]:
        """Most frequent items in events at or after ``since`` (all events when None): the no-model fallback.
        Ties go to the item seen first."""
        with self._lock:
            base, rows = self._base, self._rows
            tail_items, tail_times = self._item.values[:rows], self._time.values[:rows]
            counted = tail_items != _NONE
            if since is not None:
                table = base.filter(pc.greater_equal(base.column("timestamp"), since))
                counted &= tail_times >= since.cast(pa.int64()).as_py()
            else:
                table = base
            counts = pc.value_counts(table.column("item_id"))
            codes = self._items.codes(counts.field("values").to_pylist())
            total = np.bincount(codes, counts.field("counts").to_numpy(), minlength=len(self._items.names))
            total += np.bincount(tail_items[counted], minlength=len(total))
            names = self._items.names
        top = np.lexsort((np.arange(len(total)), -total))[:k]
        return [names[i] for i in top if total[i] > 0]


def _normalise(events: pa.Table) -> pa.Table:
    table = events.select(list(COLUMNS))
    return table.cast(_SCHEMA) if table.schema != _SCHEMA else table
