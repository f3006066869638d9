"""The server's cache of computed answers, bounded in bytes rather than in users or answers.

One least-recently-used order runs over every (user, question) entry, so one user asking thousands of
different questions evicts their own oldest answers (or anyone else's older ones) instead of growing the
process: a cap on users alone let 3,000 ``k=100`` answers of one user add ~280 MB. A per-user index keeps
:meth:`AnswerCache.drop` and the clearing of a user's stale answers proportional to that user's answers.

An entry's size is measured once, when it is put: the bytes of the answer's encoded JSON when it carries
them, else the Python objects it holds (see :func:`answer_bytes`).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")
Key = tuple[Any, ...]
"""What an answer answers; its first two fields say which user history and which model produced it."""
GENERATION = 2
"""Leading fields of a key that name the history and model: a put with another pair clears the user's older ones."""


@dataclass(frozen=True)
class CacheStats:
    """What the cache holds now: answers kept, their measured bytes, and the bound."""

    entries: int
    bytes: int
    max_bytes: int


class AnswerCache(Generic[V]):
    """Answers per (user, key) under a byte bound, evicted least recently used first; thread-safe.

    ``get`` and ``put`` are O(1) (plus evictions); ``drop`` is O(answers of that user). A bound of 0 keeps
    nothing. An answer larger than the whole bound is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(int(max_bytes), 0)
        self._lru: OrderedDict[tuple[str, Key], tuple[V, int]] = OrderedDict()
        self._users: dict[str, dict[Key, None]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def from_mb(cls, megabytes: float) -> AnswerCache[V]:
        """A cache bounded at ``megabytes`` MiB (the ``serve.cache_mb`` setting)."""
        return cls(int(megabytes * 1024 * 1024))

    def get(self, user: str, key: Key) -> V | None:
        """The answer kept for ``key``, marked as just used; None when there is none."""
        with self._lock:
            entry = self._lru.get((user, key))
            if entry is None:
                return None
            self._lru.move_to_end((user, key))
            return entry[0]

    def put(self, user: str, key: Key, answer: V) -> None:
        """Keep ``answer``; clears the user's answers of an older history or model, then evicts to the bound."""
        if not self.max_bytes:
            return
        size = answer_bytes(key, answer)
        if size > self.max_bytes:
            return
        with self._lock:
            keys = self._users.get(user)
            if keys and next(iter(keys))[:GENERATION] != key[:GENERATION]:
                self._drop(user)  # the history or the model moved on: older answers are stale
            self._remove(user, key)
            self._lru[(user, key)] = (answer, size)
            self._users.setdefault(user, {})[key] = None
            self._bytes += size
            while self._bytes > self.max_bytes:
                (old_user, old_key), _ = next(iter(self._lru.items()))
                self._remove(old_user, old_key)

    def drop(self, user: str) -> None:
        """Forget every answer of ``user``."""
        with self._lock:
            self._drop(user)

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()
            self._users.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._lru), self._bytes, self.max_bytes)

    def _drop(self, user: str) -> None:
        for key in list(self._users.get(user, ())):
            self._remove(user, key)

    def _remove(self, user: str, key: Key) -> None:
        entry = self._lru.pop((user, key), None)
        if entry is None:
            return
        self._bytes -= entry[1]
        keys = self._users[user]
        del keys[key]
        if not keys:
            del self._users[user]


def answer_bytes(key: Hashable, answer: Any) -> int:
    """The bytes an entry costs: its key plus its answer.

    An answer carrying its encoded JSON (``encoded``: a list of JSON texts) costs those texts' UTF-8 bytes.
    Otherwise the answer is measured as the Python objects it holds (``sys.getsizeof`` summed over its
    containers, strings and numbers, walked once at put): what the entry keeps alive, several times its JSON
    length (a ``k=100`` answer is ~100-150 KB as objects, ~30 KB as JSON). ``None``, booleans and dicts'
    string keys (field names, shared by every answer) count nothing; other objects possibly shared (short
    interned strings, small ints) are counted as if owned, so the measure errs high.
    """
    encoded = getattr(answer, "encoded", None)
    if encoded:
        return _deep(key) + sum(len(text.encode()) for text in encoded)
    return _deep(key) + _deep(answer)


def _deep(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 0  # singletons
    size = sys.getsizeof(value)
    if isinstance(value, str | bytes | int | float):
        return size
    if isinstance(value, dict):  # string keys are field names, shared by every answer
        return size + sum((0 if isinstance(k, str) else _deep(k)) + _deep(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return size + sum(_deep(v) for v in value)
    fields = getattr(value, "__dict__", None)
    # An instance's own dict is sized by when CPython made it (its keys shared with the class's other
    # instances or not): the same answer measured twice could differ. Count a pointer per field instead.
    return size if fields is None else size + sum(8 + _deep(v) for v in fields.values())
