"""Narrow store protocols, opened by URL, so callers never know which database holds the data.

Bulk data crosses this boundary as Arrow record-batch streams whose columns are the
canonical field names of :mod:`shopsense.domain`; external ids stay strings here and the
store keeps its own dense integer ids internally.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from shopsense.domain import RecordKind
from shopsense.errors import StoreError

EVENT_COLUMNS = (
    "key_hi",
    "key_lo",
    "event_id",
    "user_id",
    "item_id",
    "type",
    "timestamp",
    "channel",
    "session_id",
    "quantity",
    "value",
    "rating",
    "context",
)
"""Columns of an event stream handed to :meth:`EventStore.append_events`; ``key_hi``/``key_lo``
are the two halves of the 128-bit idempotency key the ingest layer derives."""


def erasure_hash(user_id: str) -> str:
    """An erased user's tombstone: the SHA-256 (hex) of the id's UTF-8 bytes. Enough to recognise the id
    when it comes back (in a model bundle, in a request) without keeping the id itself."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


def erased_since(tombstones: Mapping[str, datetime], since: datetime | None) -> set[str]:
    """The hashes of users erased at or after ``since`` (all of them when it is unknown): the users whose
    rows a bundle trained on data read at ``since``, or a backup written then, may hold from before their
    erasure. A user erased earlier who came back is in it with new data only, which is theirs to keep."""
    if since is None:
        return set(tombstones)
    return {user for user, at in tombstones.items() if at >= since}


MISSING_IMPRESSIONS = """WITH incoming AS (
    SELECT n.recommendation_id, u.user_idx, i.item_idx, n.position, n.model_version, n.{ts} AS ts,
        row_number() OVER (PARTITION BY n.recommendation_id, u.user_idx, i.item_idx, n.position, n.model_version,
            n.{ts}) AS occ
    FROM incoming_impressions n JOIN users u ON u.user_id = n.user_id JOIN items i ON i.item_id = n.item_id),
stored AS (
    SELECT recommendation_id, user_idx, item_idx, position, model_version, ts, count(*) AS copies FROM impressions
    GROUP BY recommendation_id, user_idx, item_idx, position, model_version, ts)
SELECT n.recommendation_id, n.user_idx, n.item_idx, n.position, n.model_version, n.ts
FROM incoming n LEFT JOIN stored s
  ON s.recommendation_id = n.recommendation_id AND s.user_idx = n.user_idx AND s.item_idx = n.item_idx
 AND s.position = n.position AND s.model_version IS NOT DISTINCT FROM n.model_version AND s.ts = n.ts
WHERE n.occ > coalesce(s.copies, 0)"""
"""The staged impressions (``incoming_impressions``, its time column named by ``{ts}``) a store lacks: each row
beyond the copies of it stored already (every SQL backend's :meth:`ServingStore.merge_impressions` runs it)."""


class NestedTransactions:
    """``transaction()`` for a backend: nested uses join the outermost, which alone opens a real one.

    A whole dataset import groups many imports, each of which also asks for a transaction; only the
    outermost may commit or roll back. A backend says how one real transaction runs in ``_outermost``.
    """

    _depth = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """See :class:`Store`. Nested uses join the outermost transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            with self._outermost():
                yield
        finally:
            self._depth = 0

    def _outermost(self) -> AbstractContextManager[None]:
        """One real transaction: committed when the block ends, rolled back when it raises."""
        raise NotImplementedError

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """See :class:`Store`: a transaction whose reads all see one state of the store."""
        with self.transaction():
            if self._depth == 1:
                self._begin_snapshot()
            yield

    def _begin_snapshot(self) -> None:
        """Make the real transaction just begun read one snapshot (a DuckDB transaction does already)."""


@dataclass(frozen=True)
class WriteResult:
    """What one committed write did."""

    batch_id: int
    received: int
    written: int
    already_stored: int
    new_users: int = 0
    new_items: int = 0
    txid: int | None = None
    """The database transaction that committed it, where the store has a :class:`ReplicaFeed`: the replica
    that wrote the events knows them already and must not apply them again when the feed shows them."""


@dataclass
class StoreSummary:
    """Counts a person checks after an import (``shopsense stats``)."""

    users: int
    guest_users: int
    items: int
    events: int
    events_by_type: dict[str, int]
    events_by_channel: dict[str, int]
    first_event: str | None
    last_event: str | None
    funnel: list[dict[str, Any]]
    net_quantity: float
    net_revenue: float
    top_categories: list[dict[str, Any]]
    imports: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


@runtime_checkable
class EventStore(Protocol):
    """Append-only behaviour history."""

    def append_events(
        self,
        events: pa.RecordBatchReader | pa.Table,
        user_ids: pa.Array,
        item_ids: pa.Array,
        source: str,
        *,
        log: bool = True,
    ) -> WriteResult:
        """Write events in one transaction; events whose key is stored already are skipped.

        ``user_ids``/``item_ids`` are the distinct ids the stream mentions: unknown ones are
        created (as bare users/items) in the same transaction. With ``log`` the write gets its own
        row in the import log; a server's many small commits leave it off and summarise them with
        :meth:`log_import`, so the log does not grow with traffic.
        """
        ...

    def log_import(self, batch_id: int, kind: str, source: str, received: int, written: int) -> None:
        """Add one row to the import log; ``batch_id`` is the last write it covers."""
        ...

    def scan_events(
        self, start: str | None = None, end: str | None = None, user_ids: list[str] | None = None
    ) -> pa.Table:
        """Events in ``[start, end)`` (ISO times) with external ids, oldest first; only ``user_ids``' if given."""
        ...


@runtime_checkable
class CatalogStore(Protocol):
    """Items: insert new ones, update known ones field by field."""

    def upsert_items(self, items: pa.RecordBatchReader, source: str) -> WriteResult:
        """Insert or update items; a NULL field never erases a stored value."""
        ...

    def scan_items(self) -> pa.Table:
        """The whole catalogue: item_id, title, description, category (path), brand, price, available, stock."""
        ...


@runtime_checkable
class UserStore(Protocol):
    """Users and their attributes."""

    def upsert_users(self, users: pa.RecordBatchReader, source: str) -> WriteResult:
        """Insert or update users; attributes are merged key by key."""
        ...


@runtime_checkable
class ServingStore(Protocol):
    """What the online service records besides events: impressions, erasure and export."""

    def append_impressions(self, rows: pa.Table) -> list[str]:
        """Record shown items (recommendation_id, user_id, item_id, position, model_version, timestamp);
        rows naming an item the catalogue does not know are not stored: their ids are returned."""
        ...

    def impression_report(self, hours: float, click_types: list[str], purchase_types: list[str]) -> pa.Table:
        """Per model version: impressions, recommendations, clicks and purchases of the shown item by the
        shown user within ``hours`` after the impression, and their revenue."""
        ...

    def memory_held(self) -> int:
        """Bytes this store holds in the process's memory: its engine's buffers and what its only writer
        remembers of the tables (ids, event keys). The soak benchmark sets RSS against it."""
        ...

    def scan_impressions(self) -> pa.Table:
        """Every stored impression with external ids, in the columns :meth:`append_impressions` takes, oldest
        first (what a backup keeps)."""
        ...

    def merge_impressions(self, rows: pa.Table) -> int:
        """Add the rows of :meth:`scan_impressions`' shape that are not stored yet, a row stored n times only
        beyond its n copies, so that restoring one backup twice stores its rows once; rows naming a user or
        item the store does not know are skipped. Returns the rows added."""
        ...

    def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete the user's events, impressions, record, campaign assignments, profile and rows in job
        outputs (audiences) in one transaction, and leave a tombstone (:func:`erasure_hash`) that
        outlives them; rows deleted per table."""
        ...

    def tombstones(self) -> dict[str, datetime]:
        """Every user ever erased, as :func:`erasure_hash` of the id, with the time of their latest erasure
        (UTC): what a bundle trained, or a backup written, before that time must never bring back
        (:func:`erased_since`)."""
        ...

    def add_tombstones(self, tombstones: Mapping[str, datetime]) -> int:
        """Record tombstones (hash and erasure time) this store lacks, e.g. those of a backup restored into
        it, so an older backup restored later cannot bring those users back; how many were new."""
        ...

    def user_record(self, user_id: str) -> dict[str, Any] | None:
        """The stored user row (attributes as JSON text), or None for an unknown user."""
        ...


@runtime_checkable
class MarketingStore(Protocol):
    """Customer profiles (one batch at a time), saved segments, campaigns and their persisted variant assignments."""

    def save_profiles(self, profiles: pa.Table) -> int:
        """Replace the stored profiles with this batch (built at one as_of) in one transaction."""
        ...

    def load_profiles(self) -> pa.Table | None:
        """The stored profiles, or None when none were built yet."""
        ...

    def guest_user_ids(self) -> list[str]:
        """Users flagged ``guest`` (anonymous baskets): not addressable customers."""
        ...

    def save_campaign(self, name: str, config_json: str) -> None:
        """Create or replace a campaign definition."""
        ...

    def campaigns(self) -> dict[str, str]:
        """Every campaign's definition (JSON text) by name."""
        ...

    def add_assignments(self, campaign: str, rows: pa.Table) -> int:
        """Persist (user_id, variant, assigned_at) rows; users already assigned keep their variant."""
        ...

    def assignments(self, campaign: str) -> pa.Table:
        """A campaign's assignments (user_id, variant, assigned_at)."""
        ...

    def save_segment(self, name: str, expression: str | None) -> None:
        """Create or replace a saved segment (a name and its expression); ``None`` deletes it."""
        ...

    def saved_segments(self) -> dict[str, str]:
        """Every saved segment's expression by name, oldest first."""
        ...


@dataclass(frozen=True)
class FeedCursor:
    """Where a replica's feed goes on, as a snapshot saw the transactions: every one below ``high`` had
    ended, except those in ``running``. The next window reads from ``high`` on, plus ``running`` (they may
    have committed since); a transaction still running does not hold back the ones after it."""

    high: int
    running: frozenset[int] = frozenset()

    def passed(self, txid: int) -> bool:
        """Whether the feed has read ``txid``'s writes already (they were committed before the snapshot)."""
        return txid < self.high and txid not in self.running


@dataclass(frozen=True)
class FeedStart:
    """Where a replica starts: every event and the feed cursor, read from one snapshot."""

    events: pa.Table
    """Every event, with the columns of :meth:`EventStore.scan_events`."""
    cursor: FeedCursor


@dataclass(frozen=True)
class FeedChanges:
    """What other writers committed between two feed snapshots."""

    events: pa.Table
    """The window's events: the columns of :meth:`EventStore.scan_events` plus ``txid`` (int64), by ``txid``."""
    erasures: pa.Table
    """The window's erasure tombstones: ``user_id`` and ``txid`` (int64), by ``txid``."""
    items: pa.Table
    """Items whose record changed in the window: ``item_id``, ``available``, ``stock`` as they are now."""
    erased_histories: pa.Table
    """Every event the snapshot holds of the users erased in the window (the columns of
    :meth:`EventStore.scan_events`, oldest first): what a replica's memory of them is rebuilt from."""
    next_cursor: FeedCursor


@runtime_checkable
class ReplicaFeed(Protocol):
    """A store several server processes share: each reads what the others committed, in commit windows.

    An embedded store has one process, so it has no feed.
    """

    last_txid: int | None
    """The transaction of this handle's last committed ``append_events`` or ``erase_user``."""

    def feed_start(self) -> FeedStart:
        """Every event and the feed cursor from one snapshot: no event is missed or read twice."""
        ...

    def changes_since(self, cursor: FeedCursor) -> FeedChanges:
        """Events, erasures and item changes of the transactions that committed since ``cursor``'s snapshot."""
        ...


class JobStatus(StrEnum):
    """Where a job is: queued, then running, then succeeded or failed (an interrupted job failed too)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


JOB_COLUMNS = (
    "job_id",
    "kind",
    "status",
    "progress",
    "message",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)
"""The columns :class:`Job` is read from, in its field order (both backends select them so)."""


@dataclass(frozen=True)
class Job:
    """One stored job; ``result`` is JSON text (a summary: bulky rows go to :meth:`JobStore.save_job_rows`)."""

    job_id: str
    kind: str
    status: JobStatus
    progress: float
    message: str | None
    result: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Job:
        """A job from a row of :data:`JOB_COLUMNS`."""
        job_id, kind, status, *rest = row
        return cls(job_id, kind, JobStatus(status), *rest)


@runtime_checkable
class JobStore(Protocol):
    """Long work (training, profile builds, audiences) recorded as jobs that any process can poll.

    Timestamps are the database's clock, so jobs of several processes order the same way."""

    def create_job(self, job_id: str, kind: str) -> None:
        """Record a new job, queued, progress 0."""
        ...

    def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: float | None = None,
        message: str | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        """Change the fields given (None: keep; none at all only marks the job alive); ``running`` stamps
        ``started_at``, an end ``finished_at``; every call stamps ``updated_at``."""
        ...

    def job(self, job_id: str) -> Job | None:
        """One job, or None for an unknown id."""
        ...

    def recent_jobs(self, limit: int = 50) -> list[Job]:
        """The newest ``limit`` jobs, newest first."""
        ...

    def fail_unfinished_jobs(self, error: str, silent_s: float = 0.0) -> int:
        """Mark queued or running jobs whose row has not changed for ``silent_s`` seconds failed with ``error``
        (their process died: a live runner touches its jobs' rows); how many."""
        ...

    def save_job_rows(self, job_id: str, rows: pa.Table) -> None:
        """Keep a job's bulky output (an audience's customers) beside the job, not in its result."""
        ...

    def job_rows(self, job_id: str) -> pa.Table | None:
        """The rows :meth:`save_job_rows` kept, or None."""
        ...


@runtime_checkable
class InsightStore(Protocol):
    """Aggregates the dashboard plots, computed where the events are (one grouped scan, never the rows)."""

    def activity(self, start: str | None = None, end: str | None = None) -> pa.Table:
        """Events in ``[start, end)`` (ISO times) per UTC day, type and channel (``(none)`` when unset):
        ``day`` (date), ``type``, ``channel``, ``events``, ``users`` (distinct), ``quantity`` and ``value``
        (sums). One more row per day with ``type`` and ``channel`` null holds the day's totals, its
        ``users`` the customers active that day. Oldest day first."""
        ...

    def category_activity(self, start: str | None = None, end: str | None = None, top: int = 10) -> pa.Table:
        """The ``top`` top-level categories by events in ``[start, end)``: ``category``, ``events``,
        ``users``, ``purchases``, ``revenue`` (purchases' value less returns'), most events first."""
        ...

    def item_activity(self, item_ids: list[str]) -> pa.Table:
        """Each of ``item_ids``' events per type over all time: ``item_id``, ``type``, ``events``, ``users``
        (distinct), ``quantity``, ``value``; items without events have no rows."""
        ...

    def import_log(self, limit: int = 100) -> pa.Table:
        """The newest ``limit`` rows of the import log, newest first: ``batch_id``, ``kind``, ``source``,
        ``imported_at`` (timestamp, UTC), ``received``, ``written``, ``already_stored``."""
        ...


@runtime_checkable
class Store(EventStore, CatalogStore, UserStore, ServingStore, MarketingStore, JobStore, InsightStore, Protocol):
    """Everything a shopsense deployment keeps, behind one URL."""

    url: str
    journal_path: Path | None
    """Where this store's only writer (the server) may journal acknowledged events before writing
    them in (see :mod:`shopsense.store.journal`); opening the store replays it. None: no journal,
    events are committed directly (a store in memory has nothing a journal could restore)."""

    applied: list[str]
    """Schema migrations this handle applied when it opened the store (see :mod:`shopsense.store.migrations`)."""

    def transaction(self) -> AbstractContextManager[None]:
        """Group several writes into one all-or-nothing unit (writes inside join it)."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """A transaction whose reads all see one state of the store, e.g. a backup read table by table
        while servers write."""
        ...

    def summary(self, top: int = 10) -> StoreSummary:
        """Counts, date range, funnel and top categories."""
        ...

    def export(self, kind: RecordKind, path: Path) -> int:
        """Write one table, with external ids, in the shape ``shopsense import`` reads back, in the format
        the file name asks for (:func:`shopsense.ingest.source.export_format`); returns the row count."""
        ...

    def handle(self) -> Store:
        """Another handle on the same database, for another thread (a job beside the server's writer);
        the caller closes it."""
        ...

    def close(self) -> None:
        """Release the database."""
        ...


Opener = Callable[[str, str, dict[str, Any]], Store]
_BACKENDS: dict[str, Opener] = {}


def register_backend(scheme: str, opener: Opener) -> None:
    """Make ``open_store`` understand URLs of ``scheme`` (e.g. ``duckdb``, ``postgresql``)."""
    _BACKENDS[scheme] = opener


def _open_postgres(url: str, target: str, options: dict[str, Any]) -> Store:
    """The PostgreSQL backend, imported when first asked for (it needs the ``psycopg`` driver)."""
    try:
        from shopsense.store.postgres import open_postgres
    except ImportError as exc:
        hint = "install the driver: pip install 'psycopg[binary]'"
        raise StoreError(f"cannot open a PostgreSQL store: {exc} ({hint})") from exc
    return open_postgres(url, target, options)


_SERVER_SCHEMES = {"postgresql", "postgres"}
"""Schemes whose URL names a server (``scheme://user@host:port/database``), not a path."""
for _scheme in _SERVER_SCHEMES:
    register_backend(_scheme, _open_postgres)


def is_server_url(url: str) -> bool:
    """Whether ``url`` names a database server, which several processes may share (not a file)."""
    return urlsplit(url).scheme in _SERVER_SCHEMES


def open_store(url: str, **options: Any) -> Store:
    """Open a store by URL: ``duckdb:///relative/file.duckdb``, ``duckdb:////abs/file.duckdb``,
    ``duckdb:///:memory:``, or a PostgreSQL server: ``postgresql://user@host:port/database``.

    Raises:
        StoreError: the scheme has no backend, or the backend cannot open the target.
    """
    from shopsense.store import duckdb as _duckdb  # noqa: F401  (registers the default backend)

    scheme = urlsplit(url).scheme
    if scheme not in _BACKENDS:
        known = ", ".join(sorted(_BACKENDS))
        raise StoreError(f"store URL {url!r}: unknown scheme {scheme!r} (known: {known})")
    target = url.split("://", 1)[1]
    if scheme in _SERVER_SCHEMES:  # the backend reads host, port and database from the whole URL
        return _BACKENDS[scheme](url, target, options)
    if not target.startswith("/"):
        raise StoreError(f"store URL {url!r}: expected {scheme}:///path (three slashes)")
    return _BACKENDS[scheme](url, target[1:], options)


def shown_url(url: str) -> str:
    """A store URL fit to print: a password, in the user part or as ``?password=``, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query.lower():
        return url  # nothing to hide (and an empty host keeps its "///")
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[-1]}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else f"{key}={value}" if sep else key
        for key, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
