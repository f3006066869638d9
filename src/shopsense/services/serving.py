"""ServingService: what the HTTP API does, without HTTP.

It owns the store (through one writer thread), the served model bundle (swapped atomically:
a request keeps the pipeline object it started with), the in-memory user histories and a
per-user cache of answers that any new event of that user or any model swap invalidates.
Recommendations never fail for want of a model: a missing or failing bundle degrades to
trending items and the answer says so.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa
from pydantic import ValidationError

from shopsense.domain import Item, RecordKind, User
from shopsense.errors import ConfigError
from shopsense.models.userknn import UserIds
from shopsense.pipeline import Pipeline
from shopsense.services import allocator, erasure, event_rows
from shopsense.services.answer_cache import AnswerCache
from shopsense.services.answers import Answers, rec_dict, similar_items
from shopsense.services.bundles import BundleInfo, Bundles
from shopsense.services.erasure import Erasure, StoreErasure
from shopsense.services.event_check import EventChecker, Rejected
from shopsense.services.live import LiveHistories
from shopsense.services.marketing import MarketingService
from shopsense.services.sync import ReplicaSync
from shopsense.services.writer import StoreWriter
from shopsense.settings import Settings
from shopsense.store.base import ReplicaFeed, Store, WriteResult, erasure_hash, open_store
from shopsense.store.journal import Journal

log = logging.getLogger("shopsense.serve")

COLD = "\x00cold"
"""Cache slot of the answer every user without history shares (no real id starts with NUL)."""
TRENDING_DAYS = 7
ANSWERS_KEPT = 200_000
"""Recent answers remembered for attributing impressions to the model version that produced them."""
_LOGGED_ENTRY_BYTES = sys.getsizeof(uuid.uuid4().hex) + sys.getsizeof((None, None))
"""What one remembered answer adds besides its slot in the dict: its id (always 32 hex digits) and the
(version, channel) pair, whose strings every answer of a version shares."""
_TS = pa.timestamp("us", tz="UTC")
T = TypeVar("T")


@dataclass(frozen=True)
class Accepted:
    """The outcome of a write request: accepted rows are committed; rejected ones were not written."""

    accepted: int
    rejected: list[Rejected]
    already_stored: int = 0


@dataclass(frozen=True)
class Served:
    """A bundle in service: its manifest, the fitted pipeline and its precomputed answers (if any)."""

    info: BundleInfo
    pipeline: Pipeline
    answers: Answers | None = None


@dataclass
class RecAnswer:
    """One recommendation response."""

    recommendation_id: str
    user_id: str
    model_version: str | None
    items: list[dict[str, Any]]
    fallback: str | None = None
    cached: bool = False
    encoded: list[str] | None = None
    """The items as JSON objects, when the answer was precomputed (``items`` is then empty)."""


@dataclass(frozen=True)
class UserExport:
    """Everything stored about one user: their record and every event, oldest first."""

    user: dict[str, Any]
    events: list[dict[str, Any]]


RELOAD_WAIT_S = 120.0
"""How long a model swap waits for the store thread (a stopped one never answers)."""
STORE_READ_S = 30.0
"""How long /metrics waits for the store thread to count its memory (behind a long commit at most)."""


class ServingService:
    """The online service: ingest, recommendations, impressions, erasure, model swaps."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.bundles = Bundles(settings.data_dir / "models")
        self.sync: ReplicaSync | None = None
        """Keeps memory in step with the other replicas of a shared store; None for a store of one process."""
        if isinstance(store, ReplicaFeed):
            start = store.feed_start()
            self.live = LiveHistories(start.events)
            self.sync = ReplicaSync(
                lambda: open_store(store.url),
                start,
                self.live,
                self._erase_memory,
                self.refresh_availability,
                settings.serve.sync_ms / 1000,
            )
        else:
            self.live = LiveHistories(store.scan_events())
        journal = Journal(store.journal_path) if store.journal_path is not None else None
        self._reading = store.handle()  # made before the writer thread uses the store
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="shopsense-reader")
        self.writer = StoreWriter(store, settings.serve.commit_wait_ms / 1000, self._committed, journal)
        self._served: Served | None = None
        self._model_error: str | None = None
        self._swap_lock = threading.Lock()
        self._cache: AnswerCache[RecAnswer] = AnswerCache.from_mb(settings.serve.cache_mb)
        self.checker = EventChecker(settings)
        self._types = settings.event_types.canonical()
        self._trending: tuple[float, list[str]] = (0.0, [])
        self._answers: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._log_lock = threading.Lock()
        self.reload()
        if self.sync is not None:
            self.sync.start()

    # -- models --------------------------------------------------------------------------------

    @property
    def served(self) -> Served | None:
        return self._served

    def reload(self, version: str | None = None) -> BundleInfo | None:
        """Serve the pinned/newest bundle (or ``version``); the swap is one reference assignment."""
        name = self.settings.serve.pipeline
        with self._swap_lock:
            try:
                info = self.bundles.current(name) if version is None else self._version(name, version)
                if info is None:
                    self._model_error = f"pipeline {name!r} has no trained bundle yet (run `shopsense train`)"
                    return None
                if self._served is None or self._served.info.version != info.version:
                    served = Served(info, self.bundles.load(info), self.bundles.answers(info))
                    # On the store thread, where item updates apply too: none falls between the read and the swap.
                    self.writer.call(lambda store: self._install(served, store)).result(RELOAD_WAIT_S)
                    log.info("serving %s bundle %s", name, info.version)
                self._model_error = None
                return info
            except (ConfigError, OSError, ValueError, EOFError, TimeoutError) as exc:  # keep serving what we had
                self._model_error = f"bundle could not be loaded: {exc}"
                log.error(self._model_error)
                return self._served.info if self._served else None

    def _install(self, served: Served, store: Store) -> None:
        """Serve a loaded bundle with the catalogue's current availability, forgetting every user erased
        since it was trained (run on the store thread, so no erasure falls between the read and the swap)."""
        served.pipeline.refresh_availability(store.scan_items())
        erased = served.info.erased_users(store.tombstones())
        if erased:
            if served.answers is not None:
                served.answers.forget_erased(erased)
            served.pipeline.forget_users(lambda user: erasure_hash(user) in erased)
        self._served = served

    def rollback(self) -> BundleInfo:
        """Pin the bundle before the one served now and serve it."""
        info = self.bundles.rollback(self.settings.serve.pipeline)
        self.reload()
        return info

    def _version(self, name: str, version: str) -> BundleInfo:
        found = [v for v in self.bundles.versions(name) if v.version == version]
        if not found:
            raise ConfigError(f"pipeline {name!r} has no bundle {version!r}")
        return found[0]

    @property
    def model_error(self) -> str | None:
        return self._model_error

    def held(self) -> dict[str, int]:
        """What memory holds for answers: cached answers and their bytes, events in the live histories,
        their arrays' bytes and their ids' bytes, the store's own memory (its buffers and remembered ids,
        read on the store thread), the answers remembered for impressions (up to ``ANSWERS_KEPT``); and,
        to tell a leak from memory an allocator keeps, Arrow's buffers, glibc's bytes in use and
        freed-but-kept and Python's live blocks (and bytes, under tracemalloc) — for /metrics and the
        soak benchmark."""
        cache = self._cache.stats()
        events, events_bytes, ids_bytes = self.live.held()
        with self._log_lock:
            logged, log_bytes = len(self._answers), sys.getsizeof(self._answers)
        log_bytes += logged * _LOGGED_ENTRY_BYTES
        store_bytes: int = self.writer.call(lambda store: store.memory_held()).result(timeout=STORE_READ_S)
        return {
            "cache_entries": cache.entries,
            "cache_bytes": cache.bytes,
            "events": events,
            "events_bytes": events_bytes,
            "ids_bytes": ids_bytes,
            "store_bytes": store_bytes,
            "answers_logged": logged,
            "answers_log_bytes": log_bytes,
            "arrow_bytes": pa.total_allocated_bytes(),
            **{f"{what}_bytes": value for what, value in allocator.heap().items()},
            **allocator.python_heap(),
        }

    # -- writes --------------------------------------------------------------------------------

    def _committed(self, events: pa.Table, result: Any) -> None:
        """Make a durable group visible to recommendations (on the store thread); on a shared store, only
        if the replica feed has not applied that transaction already."""
        if self.sync is None:
            self.live.append(events)
            return
        txid = result.txid if isinstance(result, WriteResult) else None
        self.sync.local(txid, lambda: self.live.append(events))

    def submit_events(self, events: pa.Table | event_rows.Columns) -> Future[Any]:
        """Queue validated events; the future resolves when they are durable (and visible to recommendations)."""
        return self.writer.append(events)

    def upsert(self, kind: RecordKind, raw: list[Any]) -> tuple[Future[Any] | None, list[Rejected]]:
        """Validate items or users; queue the valid ones for one upsert."""
        model = Item if kind is RecordKind.ITEMS else User
        valid, rejected = [], []
        for index, record in enumerate(raw):
            try:
                valid.append(model.model_validate(record))
            except ValidationError as exc:
                error = exc.errors()[0]
                rejected.append(Rejected(index, error["msg"], ".".join(str(p) for p in error["loc"]) or None))
        if not valid:
            return None, rejected
        try:
            table = _records_table(kind, valid)
        except (pa.ArrowException, UnicodeError, OverflowError) as exc:
            raise ConfigError(f"the {kind.value} cannot be stored as given: {exc}") from exc
        if kind is RecordKind.ITEMS:
            future = self.writer.call(lambda store: _then(store.upsert_items(table.to_reader(), "api"), self, table))
        else:
            future = self.writer.call(lambda store: store.upsert_users(table.to_reader(), "api"))
        return future, rejected

    def refresh_availability(self, items: pa.Table) -> None:
        """Apply stock and availability changes to the served catalogue at once (rules read it)."""
        served = self._served
        if served is None or not served.pipeline.refresh_availability(items):
            return
        self._cache.clear()  # cached answers may hold an item that just became unavailable

    # -- reads ---------------------------------------------------------------------------------

    def ready(
        self,
        user_id: str,
        k: int,
        *,
        alpha: float | None = None,
        diversity: float | None = None,
        rules: Mapping[str, Any] | None = None,
    ) -> RecAnswer | None:
        """An answer that needs no computing: the bundle's stored default answer while it still holds for
        this user (no override asked), else a cached one; None when :meth:`recommend` must compute it.
        Cheap enough for the event loop."""
        served = self._served
        if served is not None and served.answers is not None and alpha is None and diversity is None and not rules:
            rules_on = served.pipeline.config.rules
            available = served.pipeline.catalog_.available if rules_on.exclude_unavailable else None
            encoded = served.answers.lookup(user_id, self.live.count(user_id), k, available)
            if encoded is not None:
                return RecAnswer(uuid.uuid4().hex, user_id, served.info.version, [], cached=True, encoded=encoded)
        hit = self._cache.get(*self._cache_key(served, user_id, k, alpha, diversity, rules))
        if hit is None:
            return None
        return RecAnswer(uuid.uuid4().hex, user_id, hit.model_version, hit.items, hit.fallback, cached=True)

    def question(
        self,
        user_id: str,
        k: int,
        alpha: float | None,
        diversity: float | None,
        rules: Mapping[str, Any] | None,
    ) -> Hashable:
        """What a request asks, as the cache tells answers apart: two requests with equal questions
        get the same answer until the user's history or the served model changes."""
        return self._cache_key(self._served, user_id, k, alpha, diversity, rules)

    def _cache_key(
        self,
        served: Served | None,
        user_id: str,
        k: int,
        alpha: float | None,
        diversity: float | None,
        rules: Mapping[str, Any] | None,
    ) -> tuple[str, tuple[Any, ...]]:
        """Where an answer is cached: its owner's slot and the key that says what it answers.

        Everyone without history gets the same answer, so they share one slot.
        """
        cold = self.live.count(user_id) == 0
        version = served.info.version if served else None
        history = 0 if cold else self.live.version(user_id)
        return COLD if cold else user_id, (history, version, k, alpha, diversity, json.dumps(rules, sort_keys=True))

    def recommend(
        self,
        user_id: str,
        k: int,
        *,
        alpha: float | None = None,
        diversity: float | None = None,
        rules: Mapping[str, Any] | None = None,
    ) -> RecAnswer:
        """The served pipeline's answer for one user, computed and cached (or trending items when no
        model can answer). Callers try :meth:`ready` first: this one is for the thread pool."""
        served = self._served
        owner, key = self._cache_key(served, user_id, k, alpha, diversity, rules)
        answer = self._answer(served, user_id, k, alpha, diversity, rules)
        self._cache.put(owner, key, answer)
        return answer

    def _answer(
        self,
        served: Served | None,
        user_id: str,
        k: int,
        alpha: float | None,
        diversity: float | None,
        rules: Mapping[str, Any] | None,
    ) -> RecAnswer:
        rid = uuid.uuid4().hex
        if served is None:
            return RecAnswer(rid, user_id, None, self._trending_items(k), self._model_error or "no model loaded")
        events = self.live.history(user_id)
        weights = self.settings.event_types.weights
        try:
            recs = served.pipeline.recommend_user(
                user_id, events, weights, k, alpha=alpha, rules=rules, diversity=diversity
            )
        except ValueError as exc:  # a bad request value (alpha, rule) the pipeline refused
            raise ConfigError(str(exc)) from exc
        except Exception as exc:  # the model failed: degrade, never 500
            log.exception("pipeline %s failed for user %s", served.info.version, user_id)
            return RecAnswer(rid, user_id, None, self._trending_items(k), f"the model failed ({exc!r}): trending items")
        return RecAnswer(rid, user_id, served.info.version, [rec_dict(r) for r in recs])

    def _trending_items(self, k: int) -> list[dict[str, Any]]:
        made, items = self._trending
        if time.monotonic() - made > 60 or len(items) < k:
            latest = datetime.now(UTC) - timedelta(days=TRENDING_DAYS)
            items = self.live.popular(pa.scalar(latest, pa.timestamp("us", tz="UTC")), max(k, 100))
            if len(items) < k:
                items = self.live.popular(None, max(k, 100))
            self._trending = (time.monotonic(), items)
        return [
            {"item_id": item, "score": float(len(items) - rank), "reason": "Trending now", "sources": ["trending"]}
            for rank, item in enumerate(items[:k])
        ]

    def similar(self, item_id: str, k: int) -> list[dict[str, Any]]:
        """Items related to ``item_id``; KeyError for an item the model does not know."""
        served = self._served
        if served is None:
            raise LookupError(self._model_error or "no model loaded")
        return similar_items(served.pipeline, item_id, k)

    def remember(self, answer: RecAnswer, channel: str | None) -> None:
        """Keep what was answered, so impressions of it are attributed to the version that chose the items."""
        with self._log_lock:
            self._answers[answer.recommendation_id] = (answer.model_version, channel)
            while len(self._answers) > ANSWERS_KEPT:
                self._answers.popitem(last=False)

    def record_impressions(self, shown: Mapping[str, Any]) -> Future[Any]:
        """Store shown items (positions from 1); resolves to (written, rejected items unknown to the catalogue)."""
        with self._log_lock:
            version = self._answers.get(shown["recommendation_id"], (None, None))[0]
        items = list(shown["item_ids"])
        try:
            rows = self._impression_rows(shown, items, version)
        except (pa.ArrowException, UnicodeError) as exc:
            raise ConfigError(f"the impression cannot be stored as given: {exc}") from exc

        def write(store: Store) -> tuple[int, list[Rejected]]:
            unknown = set(store.append_impressions(rows))
            rejected = [Rejected(i, f"unknown item {x!r}", "item_ids") for i, x in enumerate(items) if x in unknown]
            return len(items) - len(rejected), rejected

        return self.writer.call(write)

    @staticmethod
    def _impression_rows(shown: Mapping[str, Any], items: list[str], version: str | None) -> pa.Table:
        return pa.table(
            {
                "recommendation_id": pa.array([shown["recommendation_id"]] * len(items), pa.string()),
                "user_id": pa.array([shown["user_id"]] * len(items), pa.string()),
                "item_id": pa.array(items, pa.string()),
                "position": pa.array(range(1, len(items) + 1), pa.int32()),
                "model_version": pa.array([shown.get("model_version") or version] * len(items), pa.string()),
                "timestamp": pa.array([shown.get("timestamp") or datetime.now(UTC)] * len(items), _TS),
            }
        )

    def impression_report(self, hours: float) -> Future[Any]:
        """Resolves to one dict per model version: counts, revenue, CTR and conversion of shown items."""
        purchase = [t for t in ("purchase",) if t in self._types.values()]
        clicks = [t for t in ("click", "view", "cart", "favourite") if t in self._types.values()]

        def read(store: Store) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = store.impression_report(hours, clicks, purchase).to_pylist()
            for row in rows:
                shown = row["impressions"]
                row["ctr"] = row["clicks"] / shown if shown else None
                row["conversion"] = row["purchases"] / shown if shown else None
            return rows

        return self.writer.call(read)

    def user_history(self, user_id: str, limit: int) -> Future[list[dict[str, Any]] | None]:
        """Resolves to the user's ``limit`` newest stored events, newest first; to None for a user the
        store knows neither by events nor by record. Read after the writes queued before it."""

        def read(store: Store) -> list[dict[str, Any]] | None:
            events = store.scan_events(user_ids=[user_id])
            if events.num_rows == 0 and store.user_record(user_id) is None:
                return None
            rows: list[dict[str, Any]] = events.slice(max(events.num_rows - limit, 0)).to_pylist()
            return rows[::-1]

        return self.writer.call(read)

    def user_export(self, user_id: str) -> Future[UserExport | None]:
        """Resolves to everything stored about a user (a data-subject access request); to None for a
        user with no stored record. Read after the writes queued before it."""

        def read(store: Store) -> UserExport | None:
            record = store.user_record(user_id)
            if record is None:
                return None
            return UserExport(record, store.scan_events(user_ids=[user_id]).to_pylist())

        return self.writer.call(read)

    def marketing(self, work: Callable[[MarketingService], T]) -> Future[T]:
        """Run short marketing work (a profile, segments, a campaign's assignment or read-out) with a
        :class:`MarketingService` over the server's reader handle, on its own thread: never on the writer,
        whose queue of event writes must not wait behind a scan. It sees what is committed; an event
        acknowledged a moment ago may still be in the writer's journal. Long work is a job (:mod:`.jobs`)."""
        return self._reader.submit(lambda: work(MarketingService(self.settings, self._reading)))

    def read(self, work: Callable[[Store], T]) -> Future[T]:
        """Run a short read (the dashboard's aggregates, :mod:`shopsense.services.insights`) on the server's
        reader handle and thread, like :meth:`marketing`: never on the writer, whose queue must not wait
        behind a scan. It sees what is committed."""
        return self._reader.submit(lambda: work(self._reading))

    def erase_user(self, user_id: str) -> Erasure:
        """Delete a user's data everywhere (store, every stored bundle's precomputed answers, memory,
        cache; see :mod:`shopsense.services.erasure`), ordered after queued writes; the receipt."""

        def forget(erased: StoreErasure) -> None:
            if self.sync is None:
                self._erase_memory(user_id)
            else:  # the feed shows the tombstone too: applied once, by whoever sees it first
                self.sync.local(erased.txid, lambda: self._erase_memory(user_id))

        return erasure.erase_user(user_id, self.bundles, lambda erase: self.writer.call(erase).result(), forget)

    def _erase_memory(self, user_id: str) -> None:
        """Forget an erased user's history and answers in memory (erased here or by another replica)."""
        self.live.erase(user_id)
        self._cache.drop(user_id)
        served = self._served
        if served is not None:
            if served.answers is not None:
                served.answers.forget(user_id)
            served.pipeline.forget_users(UserIds({user_id}))

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        self._reader.shutdown(wait=True)
        self._reading.close()
        self.writer.close()
        self.checker.close()


def _then(result: WriteResult, service: ServingService, table: pa.Table) -> WriteResult:
    service.refresh_availability(table)
    return result


def _records_table(kind: RecordKind, records: list[Item] | list[User] | list[Any]) -> pa.Table:
    """Arrow rows for the store's upserts (category as a list, attributes as JSON text)."""
    rows = [r.model_dump() for r in records]
    if kind is RecordKind.USERS:
        return pa.table(
            {
                "user_id": pa.array([r["user_id"] for r in rows], pa.string()),
                "attributes": pa.array([_json(r.get("attributes")) for r in rows], pa.string()),
                "first_seen": pa.array([r.get("first_seen") for r in rows], pa.timestamp("us", tz="UTC")),
            }
        )
    return pa.table(
        {
            "item_id": pa.array([r["item_id"] for r in rows], pa.string()),
            "title": pa.array([r["title"] for r in rows], pa.string()),
            "description": pa.array([r["description"] for r in rows], pa.string()),
            "category": pa.array([r["category"] for r in rows], pa.list_(pa.string())),
            "brand": pa.array([r["brand"] for r in rows], pa.string()),
            "price": pa.array([r["price"] for r in rows], pa.float64()),
            "currency": pa.array([r["currency"] for r in rows], pa.string()),
            "available": pa.array([r["available"] for r in rows], pa.bool_()),
            "stock": pa.array([r["stock"] for r in rows], pa.int64()),
            "attributes": pa.array([_json(r["attributes"]) for r in rows], pa.string()),
            "first_seen": pa.array([r["first_seen"] for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)
