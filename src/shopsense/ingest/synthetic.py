"""Seeded synthetic retail behaviour, for demos and scale tests.

The world: a catalogue of items in department > subcategory paths with brands and
log-normal prices, whose popularity follows a power law; users with Dirichlet
preferences over departments, a price sensitivity, an activity level (heavy-tailed) and a
favourite channel; sessions in which users view items from the departments they like,
some views become carts, some carts become purchases (more likely for cheap items and
liked departments); a few "staple" items per user are bought again and again; a share
of purchases is returned; in-store sessions are purchases without views.
Everything is vectorised per chunk of users, so 10M+ events stream to disk in bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from shopsense.csv_safety import neutralise_table
from shopsense.ingest.source import Format

DEPARTMENTS = [
    "Home", "Kitchen", "Garden", "Toys", "Fashion", "Beauty", "Sports", "Electronics", "Books", "Grocery",
    "Pets", "Baby",
]  # fmt: skip
CHANNELS = np.array(["web", "app", "store"])
START = np.datetime64("2024-01-01T00:00:00", "s")
_USERS_PER_CHUNK = 20_000


class GeneratorConfig(BaseModel):
    """Size and shape of the synthetic world."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(1_000, ge=1)
    items: int = Field(500, ge=1)
    events: int = Field(50_000, ge=1, description="exact number of events written")
    days: int = Field(90, ge=1)
    seed: int = 0
    departments: int = Field(8, ge=1, le=len(DEPARTMENTS))
    subcategories: int = Field(4, ge=1)
    brands_per_department: int = Field(6, ge=1)
    popularity_exponent: float = Field(1.1, gt=0, description="Zipf exponent of item popularity")
    cart_rate: float = Field(0.12, gt=0, le=1)
    purchase_rate: float = Field(0.45, gt=0, le=1, description="P(purchase | cart)")
    favourite_rate: float = Field(0.03, ge=0, le=1)
    return_rate: float = Field(0.04, ge=0, le=1)
    staple_share: float = Field(0.15, ge=0, le=1, description="share of views on the user's staple items")


class _World:
    """Catalogue and users, drawn once from the seed."""

    def __init__(self, cfg: GeneratorConfig, rng: np.random.Generator) -> None:
        n_dep = cfg.departments
        self.dept = rng.integers(0, n_dep, cfg.items)
        self.sub = rng.integers(0, cfg.subcategories, cfg.items)
        self.brand = rng.integers(0, cfg.brands_per_department, cfg.items)
        dept_price = np.exp(rng.normal(3.0, 0.6, n_dep))
        self.price = np.round(dept_price[self.dept] * np.exp(rng.normal(0, 0.5, cfg.items)), 2) + 0.49
        rank = rng.permutation(cfg.items) + 1
        weight = 1.0 / rank**cfg.popularity_exponent
        # Per department: items ordered, cumulative popularity normalised into [d, d+1).
        self.order = np.lexsort((rank, self.dept))
        sorted_dept = self.dept[self.order]
        w = weight[self.order]
        cum = np.zeros(cfg.items)
        for d in range(n_dep):
            mask = sorted_dept == d
            if mask.any():
                cum[mask] = d + np.cumsum(w[mask]) / w[mask].sum()
        self.cdf = cum
        present = np.bincount(self.dept, minlength=n_dep) > 0
        self.pref = rng.dirichlet(np.full(n_dep, 0.4), cfg.users) * present
        self.pref /= self.pref.sum(axis=1, keepdims=True)
        self.activity = rng.pareto(1.5, cfg.users) + 0.2
        self.price_sens = rng.uniform(0.2, 1.5, cfg.users)
        self.channel_pref = rng.dirichlet(np.array([3.0, 2.0, 0.8]), cfg.users)
        # One staple item per user, drawn once, bought again and again.
        self.staple = self.pick_items(rng, np.arange(cfg.users))

    def pick_items(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One item per entry of ``users``: department by preference, item by popularity."""
        u = rng.random(len(users))
        dept = (self.pref[users].cumsum(axis=1) < u[:, None]).sum(axis=1)
        dept = np.minimum(dept, self.pref.shape[1] - 1)
        pos = np.searchsorted(self.cdf, dept + rng.random(len(users)))
        picked: np.ndarray = self.order[np.minimum(pos, len(self.order) - 1)]
        return picked


def _catalogue(cfg: GeneratorConfig, world: _World) -> pa.Table:
    names = np.array(DEPARTMENTS[: cfg.departments])
    dept = names[world.dept]
    sub = np.char.add(np.char.add(dept, " "), (world.sub + 1).astype(str))
    ids = np.char.add("item-", np.arange(cfg.items).astype(str))
    return pa.table(
        {
            "item_id": ids,
            "title": np.char.add(np.char.add(sub, " item "), np.arange(cfg.items).astype(str)),
            "category": np.char.add(np.char.add(dept, " > "), sub),
            "brand": np.char.add(np.char.add(dept, " brand "), (world.brand + 1).astype(str)),
            "price": world.price,
            "currency": np.full(cfg.items, "EUR"),
            "available": np.ones(cfg.items, dtype=bool),
        }
    )


def _users(cfg: GeneratorConfig, world: _World, rng: np.random.Generator) -> pa.Table:
    """Users in the shape ``import users`` takes as it is: descriptive fields nested in ``attributes``."""
    countries = np.array(["DE", "FR", "GB", "NL", "ES", "IT"])
    country = countries[rng.integers(0, len(countries), cfg.users)]
    channel = CHANNELS[world.channel_pref.argmax(axis=1)]
    # Both vocabularies are plain letters, so the JSON needs no escaping.
    attributes = np.char.add(np.char.add(np.char.add('{"country": "', country), '", "preferred_channel": "'), channel)
    return pa.table(
        {
            "user_id": np.char.add("user-", np.arange(cfg.users).astype(str)),
            "attributes": np.char.add(attributes, '"}'),
        }
    )


def _chunk_events(
    cfg: GeneratorConfig, world: _World, rng: np.random.Generator, users: np.ndarray, views_per_user: float
) -> dict[str, np.ndarray]:
    """Events of one chunk of users, as columns (not yet sorted, no ids)."""
    n_views = rng.poisson(world.activity[users] * views_per_user)
    v_user = np.repeat(users, n_views)
    staples = rng.random(len(v_user)) < cfg.staple_share
    v_item = world.pick_items(rng, v_user)
    v_item[staples] = world.staple[v_user[staples]]
    session_len = 6
    first = np.repeat(np.cumsum(n_views) - n_views, n_views)
    v_session = (np.arange(len(v_user)) - first) // session_len
    session_key = v_user.astype(np.int64) * 1_000_000 + v_session.astype(np.int64)
    uniq, inverse = np.unique(session_key, return_inverse=True)
    session_start = rng.integers(0, cfg.days * 86_400, len(uniq))
    u_for_session = (uniq // 1_000_000).astype(np.int64)
    cp = world.channel_pref[u_for_session].cumsum(axis=1)
    s_channel = (cp < rng.random(len(uniq))[:, None]).sum(axis=1).clip(0, 2)
    v_time = session_start[inverse] + rng.integers(0, 1_800, len(v_user))
    v_channel = s_channel[inverse]
    affinity = world.pref[v_user, world.dept[v_item]] * world.pref.shape[1]
    price_factor = np.exp(-world.price_sens[v_user] * np.log1p(world.price[v_item]) / 4)
    p_cart = np.clip(cfg.cart_rate * affinity * price_factor + staples * 0.15, 0, 0.95)
    carted = rng.random(len(v_user)) < p_cart
    bought = carted & (rng.random(len(v_user)) < cfg.purchase_rate)
    favourite = rng.random(len(v_user)) < cfg.favourite_rate * affinity
    in_store = v_channel == 2
    qty = rng.geometric(0.6, len(v_user))
    returned = bought & (rng.random(len(v_user)) < cfg.return_rate)

    parts = []
    online = ~in_store

    def part(mask: np.ndarray, kind: str, offset: np.ndarray | int) -> None:
        parts.append((mask, kind, offset))

    part(online, "view", 0)
    part(online & favourite, "favourite", 20)
    part(online & carted, "cart", 60)
    part(bought, "purchase", np.where(in_store, 0, 240))
    part(returned, "return", rng.integers(2, 20, len(v_user)) * 86_400)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("u", "i", "t", "type", "ch", "s", "q", "val")}
    for mask, kind, offset in parts:
        idx = np.flatnonzero(mask)
        off = offset if isinstance(offset, int) else offset[idx]
        cols["u"].append(v_user[idx])
        cols["i"].append(v_item[idx])
        cols["t"].append(v_time[idx] + off)
        cols["type"].append(np.full(len(idx), kind))
        cols["ch"].append(v_channel[idx])
        cols["s"].append(inverse[idx] + 0)
        commerce = kind in ("purchase", "return", "cart")
        cols["q"].append(qty[idx] if commerce else np.ones(len(idx), dtype=np.int64))
        value = world.price[v_item[idx]] * qty[idx] if kind in ("purchase", "return") else np.full(len(idx), np.nan)
        cols["val"].append(value)
    merged = {k: np.concatenate(v) for k, v in cols.items()}
    merged["s_key"] = session_key[merged["s"]] if len(merged["s"]) else merged["s"]
    return merged


def generate(
    cfg: GeneratorConfig, out: Path, fmt: Format = Format.PARQUET, on_progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Write ``items``, ``users`` and exactly ``cfg.events`` events under ``out``.

    Returns:
        Rows written per file kind.
    """
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    out.mkdir(parents=True, exist_ok=True)
    suffix = {Format.PARQUET: "parquet", Format.CSV: "csv", Format.JSONL: "jsonl"}[fmt]
    _write_table(_catalogue(cfg, world), out / f"items.{suffix}", fmt)
    _write_table(_users(cfg, world, rng), out / f"users.{suffix}", fmt)
    # Views per activity unit so the expected total slightly exceeds the target; the tail is cut.
    events_per_view = 1.0 + cfg.favourite_rate + cfg.cart_rate * 1.6
    views_per_user = 1.05 * cfg.events / (events_per_view * world.activity.sum())
    writer = _Writer(out / f"events.{suffix}", fmt)
    written = 0
    try:
        while written < cfg.events:
            for start in range(0, cfg.users, _USERS_PER_CHUNK):
                if written >= cfg.events:
                    break
                users = np.arange(start, min(start + _USERS_PER_CHUNK, cfg.users))
                cols = _chunk_events(cfg, world, rng, users, views_per_user)
                take = min(len(cols["u"]), cfg.events - written)
                table = _to_table(cols, take, written, cfg.seed)
                writer.write(table)
                written += take
                if on_progress:
                    on_progress(take)
    finally:
        writer.close()
    return {"items": cfg.items, "users": cfg.users, "events": written}


def _to_table(cols: dict[str, np.ndarray], take: int, offset: int, seed: int) -> pa.Table:
    order = np.lexsort((cols["t"], cols["u"]))[:take]
    ts = (START + cols["t"][order].astype("timedelta64[s]")).astype("datetime64[ms]")
    value = cols["val"][order]
    ids = np.arange(offset, offset + take)
    return pa.table(
        {
            "event_id": pa.array(np.char.add(f"s{seed}-", ids.astype(str))),
            "user_id": pa.array(np.char.add("user-", cols["u"][order].astype(str))),
            "item_id": pa.array(np.char.add("item-", cols["i"][order].astype(str))),
            "type": pa.array(cols["type"][order]),
            "timestamp": pa.array(ts, type=pa.timestamp("ms", tz="UTC")),
            "channel": pa.array(CHANNELS[cols["ch"][order]]),
            "session_id": pa.array(np.char.add("sess-", cols["s_key"][order].astype(str))),
            "quantity": pa.array(cols["q"][order].astype(np.int64)),
            "value": pa.array(np.round(value, 2), mask=np.isnan(value)),
        }
    )


def _write_table(table: pa.Table, path: Path, fmt: Format) -> None:
    writer = _Writer(path, fmt)
    writer.write(table)
    writer.close()


class _Writer:
    """Append tables to one Parquet, CSV or JSON Lines file."""

    def __init__(self, path: Path, fmt: Format) -> None:
        self.path = path
        self.fmt = fmt
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        self._json = open(path, "w", encoding="utf-8") if fmt is Format.JSONL else None  # noqa: SIM115

    def write(self, table: pa.Table) -> None:
        if self.fmt is Format.PARQUET:
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema, compression="zstd")
            self._parquet.write_table(table)
        elif self.fmt is Format.CSV:
            if self._csv is None:
                self._csv = pacsv.CSVWriter(self.path, table.schema)
            self._csv.write_table(neutralise_table(table))
        else:
            assert self._json is not None
            con = duckdb.connect()
            con.register("chunk", table)
            (lines,) = con.sql("SELECT to_json(chunk) FROM chunk").fetchnumpy().values()
            self._json.writelines(line + "\n" for line in lines)
            con.close()

    def close(self) -> None:
        for w in (self._parquet, self._csv, self._json):
            if w is not None:
                w.close()
