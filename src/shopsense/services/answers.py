"""Precomputed answers: the default recommendations of a bundle's active users, ready to send.

Computing an answer (candidates from several models, features, two heads, reasons with their
contributions) takes tens of milliseconds; a shop's pages ask for the same default list again
and again. So training computes, in batches, each recently active user's top items with the
pipeline's own defaults and stores them beside the model (``answers.arrow``, one JSON object
per item, memory-mapped at load). A request that asks for no more than that, for a user whose
history has not changed since, is a lookup: the server checks the user's current event count
against the one the answer was computed from, drops items that became unavailable and sends
the stored objects. Anything else (an override, a new event, an unknown user) is computed live,
and by the same pipeline code, so both paths give the same items (a test holds them equal).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import secrets
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
from tqdm import tqdm

from shopsense.durable import sync
from shopsense.exports import copy_to_file
from shopsense.pipeline import Pipeline, Recommendation
from shopsense.store.base import erasure_hash

ANSWERS_FILE = "answers.arrow"
_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("events", pa.int64()),
        ("item", pa.int32()),
        ("json", pa.large_string()),
    ]
)


def rec_dict(rec: Recommendation) -> dict[str, Any]:
    """One recommended item as the API sends it (non-finite numbers as null)."""
    explanation = rec.explanation
    return {
        "item_id": rec.item_id,
        "title": rec.title or None,
        "score": _finite(rec.score),
        "p_attention": _finite(rec.p_attention),
        "p_purchase": _finite(rec.p_purchase),
        "value": _finite(rec.value),
        "pinned": rec.pinned,
        "sources": list(rec.sources),
        "reason": explanation.reason,
        "evidence": explanation.evidence,
        "related_item": explanation.related_item,
        "contributions": {k: round(float(v), 6) for k, v in explanation.contributions.items()},
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def build_answers(
    pipeline: Pipeline,
    events: pa.Table,
    weights: dict[str, float],
    k: int,
    max_users: int,
    batch: int = 1_000,
) -> pa.Table:
    """Top-``k`` default answers of the ``max_users`` most recently active users of ``events``.

    ``events`` is what the pipeline was trained on (``user_id, item_id, type, timestamp, ...``);
    each user's event count is stored so a later request can tell whether the history moved on.
    """
    if events.num_rows == 0 or max_users == 0:
        return _SCHEMA.empty_table()
    latest = pa.TableGroupBy(events.select(["user_id", "timestamp"]), "user_id").aggregate(
        [("timestamp", "max"), ("timestamp", "count")]
    )
    order = pc.sort_indices(latest, [("timestamp_max", "descending"), ("user_id", "ascending")])
    chosen = latest.take(order[:max_users])
    users = chosen.column("user_id").to_pylist()
    counts = dict(zip(users, chosen.column("timestamp_count").to_pylist(), strict=True))
    parts = []
    batches = answer_batches(pipeline, events, weights, users, k, batch)
    for ids, answers in tqdm(
        batches, total=math.ceil(len(users) / batch), desc="precomputing answers", unit="batch", leave=False
    ):
        rows = [(user, counts[user], rec) for user, recs in zip(ids, answers, strict=True) for rec in recs]
        parts.append(
            pa.table(
                {
                    "user_id": [user for user, _, _ in rows],
                    "events": [n for _, n, _ in rows],
                    "item": pipeline.items_.index([rec.item_id for _, _, rec in rows]),
                    "json": [json.dumps(rec_dict(rec), separators=(",", ":")) for _, _, rec in rows],
                },
                schema=_SCHEMA,
            )
        )
    return pa.concat_tables(parts) if parts else _SCHEMA.empty_table()


def answer_batches(
    pipeline: Pipeline,
    events: pa.Table,
    weights: dict[str, float],
    users: list[str],
    k: int | None,
    batch: int = 1_000,
    *,
    alpha: float | None = None,
    rules: Mapping[str, Any] | None = None,
    diversity: float | None = None,
) -> Iterator[tuple[list[str], list[list[Recommendation]]]]:
    """Answers for many ``users``, ``batch`` at a time: each batch's ids and their lists, in order.

    ``events`` holds (at least) these users' events. Each batch is one vectorised pass of the
    pipeline (candidates, features and both heads for the whole batch), never a pass per user; a
    user without events gets what a new user gets.

    Raises:
        ValueError: alpha, diversity or a rule override is out of range.
    """
    wanted = pa.array(users, pa.string())
    position = pc.fill_null(pc.index_in(events.column("user_id"), value_set=wanted), -1).to_numpy()
    mine = position >= 0
    part = position[mine] // batch  # each event's batch, found once; then one sort, and slices
    order = np.argsort(part, kind="stable")
    own = events.filter(pa.array(mine)).take(pa.array(order))
    bounds = np.searchsorted(part[order], np.arange(0, (len(users) + batch - 1) // batch + 1))
    for n, start in enumerate(range(0, len(users), batch)):
        ids = users[start : start + batch]
        theirs = own.slice(int(bounds[n]), int(bounds[n + 1] - bounds[n]))
        yield ids, pipeline.recommend_users(ids, theirs, weights, k, alpha=alpha, rules=rules, diversity=diversity)


def similar_items(pipeline: Pipeline, item_id: str, k: int) -> list[dict[str, Any]]:
    """Items related to ``item_id`` ("often bought together") with their titles, as the API and CLI show them.

    Raises:
        KeyError: the pipeline does not know the item.
    """
    related = pipeline.similar(item_id, k)
    titles = pipeline.catalog_.titles
    at = pipeline.items_.index([other for other, _ in related]) if titles else [-1] * len(related)
    return [
        {"item_id": other, "score": score, "title": titles[i] if i >= 0 else None}
        for (other, score), i in zip(related, at, strict=True)
    ]


RECOMMENDATIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("score", pa.float64()),
        ("p_attention", pa.float64()),
        ("p_purchase", pa.float64()),
        ("reason", pa.string()),
    ]
)
"""One row per recommended item of a batch export (non-finite numbers as null)."""


def recommendations_table(users: list[str], answers: list[list[Recommendation]]) -> pa.Table:
    """The answers of ``users`` as :data:`RECOMMENDATIONS_SCHEMA` rows, ranks from 1."""
    flat = [(user, rank, rec) for user, recs in zip(users, answers, strict=True) for rank, rec in enumerate(recs, 1)]
    return pa.table(
        {
            "user_id": [user for user, _, _ in flat],
            "rank": [rank for _, rank, _ in flat],
            "item_id": [rec.item_id for _, _, rec in flat],
            "title": [rec.title or None for _, _, rec in flat],
            "score": [_finite(rec.score) for _, _, rec in flat],
            "p_attention": [_finite(rec.p_attention) for _, _, rec in flat],
            "p_purchase": [_finite(rec.p_purchase) for _, _, rec in flat],
            "reason": [rec.explanation.reason for _, _, rec in flat],
        },
        schema=RECOMMENDATIONS_SCHEMA,
    )


def export_recommendations(table: pa.Table, path: Path) -> Path:
    """Write rows in the format the file name asks for (see :mod:`shopsense.exports`), whole or not at all."""
    con = duckdb.connect()
    try:
        con.register("recommendations", table)
        copy_to_file(con, "SELECT * FROM recommendations", path)
    finally:
        con.close()
    return path


def write_answers(table: pa.Table, path: Path) -> None:
    """An uncompressed Arrow file, so the server can memory-map it instead of reading it into memory."""
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())


@dataclass
class Answers:
    """A bundle's precomputed answers, looked up per request."""

    table: pa.Table
    k: int
    _where: dict[str, tuple[int, int, int]] = field(init=False)
    _forgotten: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.table = self.table.combine_chunks()
        users = self.table.column("user_id").to_numpy(zero_copy_only=False)
        counts = self.table.column("events").to_numpy()
        self._items = self.table.column("item").to_numpy()
        self._json = self.table.column("json")
        if not len(users):
            self._where = {}
            return
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        ends = np.r_[starts[1:], len(users)]
        self._where = {str(users[s]): (int(s), int(e), int(counts[s])) for s, e in zip(starts, ends, strict=True)}

    @classmethod
    def load(cls, path: Path, k: int) -> Answers:
        """Memory-map a bundle's answers file (pages are read when first asked for)."""
        return cls(ipc.open_file(pa.memory_map(str(path))).read_all(), k)

    def __len__(self) -> int:
        return len(self._where)

    def lookup(self, user_id: str, events: int, k: int, available: np.ndarray | None) -> list[str] | None:
        """The user's first ``k`` stored items that are still available, as JSON objects; None when the
        answer cannot be trusted: no stored answer, the history changed (``events`` differs), or too few
        stored items are left to fill ``k``."""
        if k > self.k or user_id in self._forgotten:
            return None
        where = self._where.get(user_id)
        if where is None or where[2] != events:
            return None
        start, end, _ = where
        if available is None:
            first: list[str] = self._json.slice(start, min(k, end - start)).to_pylist()
            return first
        kept = np.flatnonzero(available[self._items[start:end]])[:k]
        if len(kept) < min(k, end - start):
            return None
        if not len(kept):  # k == 0
            return []
        texts = self._json.slice(start, int(kept[-1]) + 1).to_pylist()
        return [texts[i] for i in kept]

    def forget(self, user_id: str) -> None:
        """Never answer for this user again (erasure)."""
        self._forgotten.add(user_id)

    def forget_erased(self, tombstones: Collection[str]) -> int:
        """Never answer for the users the store's tombstones name (:func:`~shopsense.store.base.erasure_hash`
        of their ids): erased after this bundle was trained. Each stored user's id is hashed once; the
        users forgotten."""
        if not tombstones or not self._where:
            return 0
        gone = [user for user in self._where if erasure_hash(user) in tombstones]
        self._forgotten.update(gone)
        return len(gone)


def purge_answers(path: Path, user_id: str) -> int:
    """Rewrite an answers file without the user's rows; the rows removed (0: the file is left as it is).

    The file is memory-mapped and only its ``user_id`` column is compared: a file that does not hold the
    user is neither read whole nor rewritten. One that does is written beside it, synced and renamed
    over it, so a reader sees the old file or the new one, whole. The read, the filter and the rename
    hold an exclusive lock (``answers.arrow.lock`` beside the file): two erasures at once (two admin
    calls, replicas sharing the data directory) take turns, and the second reads what the first wrote
    instead of bringing its user back. A server that has the old file memory-mapped keeps reading it
    (its pages stay until unmapped) and forgets the user itself (:meth:`Answers.forget`).
    """
    with _locked(path.with_name(f"{path.name}.lock")):
        with pa.memory_map(str(path)) as source:
            table = ipc.open_file(source).read_all()  # zero-copy: the pages are read only where touched
            mine = pc.fill_null(pc.equal(table.column("user_id"), user_id), False)
            found = int(pc.sum(mine).as_py() or 0)
            if not found:
                return 0
            partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
            try:
                write_answers(table.filter(pc.invert(mine)), partial)
                sync(partial)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
        sync(path.parent)
    return found


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """An exclusive ``flock`` on a lock file, held for the block (waits for another holder)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # lets go of the lock
