"""What the dashboard's operator pages show, computed where the data is and shaped for plotting.

The aggregates come from the store's :class:`~shopsense.store.base.InsightStore` (one grouped scan each,
never the event rows) on the server's reader handle (:meth:`ServingService.read`), so a page never waits
behind event writes; the catalogue, read whole for search, is kept for a short while.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from shopsense.services.serving import ServingService
from shopsense.store.base import Store

T = TypeVar("T")

CATALOG_TTL_S = 60.0
"""How long a read of the catalogue serves searches before it is read again."""
FUNNEL = ("view", "cart", "purchase")


@dataclass
class Overview:
    """Daily activity in a date range, ready for plots: one list per series, aligned with ``days``."""

    start: date | None
    end: date | None
    first_day: date | None
    last_day: date | None
    days: list[date] = field(default_factory=list)
    by_type: dict[str, list[int]] = field(default_factory=dict)
    by_channel: dict[str, list[int]] = field(default_factory=dict)
    active: list[int] = field(default_factory=list)
    revenue: list[float] = field(default_factory=list)
    """Purchases' value less returns', per day."""
    funnel: list[tuple[str, int]] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(sum(series) for series in self.by_type.values())

    @property
    def net_revenue(self) -> float:
        return round(sum(self.revenue), 2)

    @property
    def mean_active(self) -> float:
        return sum(self.active) / len(self.active) if self.active else 0.0


@dataclass
class ItemInsight:
    """One item: its catalogue record and its events per type (events, distinct users, quantity, value)."""

    record: dict[str, Any]
    by_type: dict[str, dict[str, float]]

    def users(self, kind: str) -> int:
        return int(self.by_type.get(kind, {}).get("users", 0))

    @property
    def conversion(self) -> float | None:
        """Buyers over viewers (None without views)."""
        viewers = self.users("view")
        return self.users("purchase") / viewers if viewers else None


class Insights:
    """The dashboard's reads over a server's :class:`ServingService`; each returns a future."""

    def __init__(self, serving: ServingService) -> None:
        self.serving = serving
        self._catalog: tuple[float, pa.Table, pa.Array] | None = None
        self._lock = threading.Lock()

    def overview(self, start: date | None, end: date | None, top: int = 10) -> Future[Overview]:
        """Activity from ``start`` to ``end`` (both days included; None: unbounded)."""
        lo = start.isoformat() if start else None
        hi = (end + timedelta(days=1)).isoformat() if end else None

        def read(store: Store) -> Overview:
            return _overview(store.activity(lo, hi), store.category_activity(lo, hi, top), start, end)

        return self._read(read)

    def item(self, item_id: str) -> Future[ItemInsight | None]:
        """An item's record and activity; None for an item the catalogue does not hold."""

        def read(store: Store) -> ItemInsight | None:
            record = self._record(store, item_id)
            if record is None:
                return None
            rows = store.item_activity([item_id]).to_pylist()
            by_type = {r["type"]: {k: r[k] for k in ("events", "users", "quantity", "value")} for r in rows}
            return ItemInsight(record, by_type)

        return self._read(read)

    def search(self, query: str, limit: int = 50) -> Future[list[dict[str, Any]]]:
        """Catalogue items whose id, title, brand or category contain ``query`` (case-insensitive),
        exact id first; the first ``limit``."""
        needle = query.strip().lower()

        def read(store: Store) -> list[dict[str, Any]]:
            catalog, text = self._catalog_and_text(store)
            if not needle:
                first: list[dict[str, Any]] = catalog.slice(0, limit).to_pylist()
                return first
            found = catalog.filter(pc.match_substring(text, needle))
            exact = pc.fill_null(pc.equal(pc.utf8_lower(found.column("item_id")), needle), False)
            order = pa.concat_arrays([pc.indices_nonzero(exact), pc.indices_nonzero(pc.invert(exact))])
            shown: list[dict[str, Any]] = found.take(order.slice(0, limit)).to_pylist()
            return shown

        return self._read(read)

    def import_log(self, limit: int = 100) -> Future[list[dict[str, Any]]]:
        """The newest imports, newest first (see :meth:`~shopsense.store.base.InsightStore.import_log`)."""
        return self._read(lambda store: store.import_log(limit).to_pylist())

    def titles(self, item_ids: list[str]) -> Future[dict[str, dict[str, Any]]]:
        """The catalogue records of ``item_ids`` that it holds, by id."""
        wanted = sorted(set(item_ids))

        def read(store: Store) -> dict[str, dict[str, Any]]:
            catalog = self._items(store)
            ids = pa.array(wanted, type=catalog.schema.field("item_id").type)
            found = catalog.filter(pc.is_in(catalog.column("item_id"), value_set=ids))
            return {r["item_id"]: r for r in found.to_pylist()}

        return self._read(read)

    def _record(self, store: Store, item_id: str) -> dict[str, Any] | None:
        catalog = self._items(store)
        rows: list[dict[str, Any]] = catalog.filter(pc.equal(catalog.column("item_id"), item_id)).to_pylist()
        return rows[0] if rows else None

    def _items(self, store: Store) -> pa.Table:
        return self._catalog_and_text(store)[0]

    def _catalog_and_text(self, store: Store) -> tuple[pa.Table, pa.Array]:
        """The catalogue and, per item, its id, title, brand and categories lower-cased in one string (what
        :meth:`search` matches), both kept for :data:`CATALOG_TTL_S`."""
        with self._lock:
            cached = self._catalog
            if cached is None or time.monotonic() - cached[0] > CATALOG_TTL_S:
                catalog = store.scan_items()
                cached = self._catalog = (time.monotonic(), catalog, _search_text(catalog))
            return cached[1], cached[2]

    def _read(self, work: Callable[[Store], T]) -> Future[T]:
        return self.serving.read(work)


def _search_text(catalog: pa.Table) -> pa.Array:
    """Each item's id, title, brand and categories, lower-cased and joined by spaces (one string per item)."""
    if catalog.num_rows == 0:
        return pa.array([], pa.string())

    def text(name: str) -> Any:
        column = catalog.column(name)
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.binary_join(column, " ")
        return pc.fill_null(pc.cast(column, pa.string()), "")

    parts = [text(name) for name in ("item_id", "title", "brand", "category") if name in catalog.schema.names]
    joined = pc.binary_join_element_wise(*parts, " ")
    return pc.utf8_lower(joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined)


def _overview(activity: pa.Table, categories: pa.Table, start: date | None, end: date | None) -> Overview:
    rows = activity.to_pylist()
    days = sorted({r["day"] for r in rows})
    index = {d: i for i, d in enumerate(days)}
    by_type: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    by_channel: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    active = [0] * len(days)
    revenue = [0.0] * len(days)
    funnel = dict.fromkeys(FUNNEL, 0)
    for r in rows:
        i = index[r["day"]]
        if r["type"] is None:
            active[i] = int(r["users"])
            continue
        by_type[r["type"]][i] += int(r["events"])
        by_channel[r["channel"]][i] += int(r["events"])
        if r["type"] == "purchase":
            revenue[i] += float(r["value"])
        elif r["type"] == "return":
            revenue[i] -= float(r["value"])
        if r["type"] in funnel:
            funnel[r["type"]] += int(r["events"])
    return Overview(
        start=start,
        end=end,
        first_day=days[0] if days else None,
        last_day=days[-1] if days else None,
        days=days,
        by_type=dict(sorted(by_type.items(), key=lambda kv: -sum(kv[1]))),
        by_channel=dict(sorted(by_channel.items(), key=lambda kv: -sum(kv[1]))),
        active=active,
        revenue=[round(v, 2) for v in revenue],
        funnel=list(funnel.items()),
        categories=categories.to_pylist(),
    )


def parse_day(value: str | None) -> date | None:
    """A ``YYYY-MM-DD`` form value as a date; None when empty or malformed."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        return None


def served_alpha(serving: ServingService) -> float | None:
    """The fusion alpha of the served pipeline (what a request without ``alpha`` gets); None without a model."""
    served = serving.served
    return None if served is None else float(served.pipeline.config.ranker.fusion.alpha)


def top_customers(profiles: pa.Table, limit: int = 25) -> list[dict[str, Any]]:
    """The most valuable customers (monetary value, then frequency), for finding someone to look at."""
    columns = [
        c for c in ("user_id", "rfm_segment", "lifecycle", "monetary", "frequency") if c in profiles.schema.names
    ]
    if "monetary" not in columns:
        first: list[dict[str, Any]] = profiles.select(columns).slice(0, limit).to_pylist()
        return first
    order = [("monetary", "descending"), ("user_id", "ascending")]
    ranked: list[dict[str, Any]] = profiles.select(columns).sort_by(order).slice(0, limit).to_pylist()
    return ranked
