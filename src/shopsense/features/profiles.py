"""Customer profiles at an explicit ``as_of``: the one table marketing reads instead of raw events.

One row per user with any event before ``as_of`` (see the column contract in :func:`build_profiles`).
Nothing at or after ``as_of`` is read, so a profile built for a past date is exactly what a
campaign could have known then, and every age is measured back from ``as_of``, never from "now".
Aggregates run in an in-memory DuckDB over the Arrow tables; CLV comes from :mod:`.clv`, the RFM
scores and segment names from :mod:`.rfm`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopsense.errors import ConfigError
from shopsense.features.churn import ChurnConfig, ChurnFitError, fit_churn
from shopsense.features.clv import (
    DAY_US,
    ClvConfig,
    ClvFitError,
    ClvModel,
    PurchaseSummary,
    as_of_micros,
    event_micros,
    history_before,
    locate,
    purchase_summary,
    type_flags,
    user_codes,
)
from shopsense.features.rfm import quintile_scores, rfm_segment_names
from shopsense.settings import DEFAULT_EVENT_TYPES

log = logging.getLogger(__name__)
CLV_ERROR_KEY = "shopsense.clv_error"
"""Schema metadata key holding why the CLV columns are NaN (absent when CLV was fitted)."""
CHURN_ERROR_KEY = "shopsense.churn_error"
"""Schema metadata key holding why ``churn_probability`` is NaN (absent when churn was fitted)."""
CHURN_MODEL_KEY = "shopsense.churn"
"""Schema metadata key holding the fitted churn model's horizon, held-out AUC and sizes (JSON)."""
INTEREST_TYPE = pa.list_(pa.struct([("tag", pa.string()), ("weight", pa.float64())]))
_OPTIONAL = {"session_id": pa.string(), "channel": pa.string(), "quantity": pa.float64()}


class ProfileConfig(BaseModel):
    """What counts as a purchase, how fast interest fades, where lifecycle stages begin, how CLV is fitted.

    Lifecycle stages (first match wins): ``prospect`` has no purchase before ``as_of``; ``new``
    bought for the first time within ``new_days`` (30); ``active`` last bought within
    ``active_days`` (90); ``at_risk`` last bought within ``lapsed_days`` (180); ``lapsed`` beyond.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    purchase_types: tuple[str, ...] = ("purchase",)
    return_types: tuple[str, ...] = ("return",)
    interest_half_life_days: float = Field(60.0, gt=0, description="an event this old adds half the interest")
    interest_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_TYPES), description="interest added per event type (returns < 0)"
    )
    top_interests: int = Field(20, ge=1, description="tags kept per kind (category, brand) and user")
    new_days: float = Field(30.0, ge=0, description="first purchase this recent: a new customer")
    active_days: float = Field(90.0, gt=0, description="last purchase this recent: active")
    lapsed_days: float = Field(180.0, gt=0, description="last purchase older than this: lapsed (else at risk)")
    clv: ClvConfig = Field(default_factory=ClvConfig)
    churn: ChurnConfig = Field(default_factory=ChurnConfig)

    @model_validator(mode="after")
    def _stages_in_order(self) -> ProfileConfig:
        if not self.active_days < self.lapsed_days:
            raise ValueError(f"active_days ({self.active_days}) must be below lapsed_days ({self.lapsed_days})")
        return self


def build_profiles(
    events: pa.Table, items: pa.Table, as_of: datetime, config: ProfileConfig = ProfileConfig()
) -> pa.Table:
    """One profile row per user with events before ``as_of``.

    Columns (float64 unless stated, NaN where unknown): ``user_id`` (string), ``as_of``
    (timestamp[us, UTC]); ``recency_days``, ``frequency`` (purchase days), ``monetary`` (purchase
    value minus return value), ``r_score``/``f_score``/``m_score`` (int8 quintiles among purchasers,
    5 best, 0 for prospects), ``rfm_segment``; ``first_purchase_days``, ``tenure_days`` (since the
    first event of any type), ``orders`` (int64: distinct session ids, or purchase times without
    one), ``avg_order_value`` (purchase value per order), ``returns_share`` (returned / purchased
    value); ``price_band`` (median paid unit price against the catalogue price terciles);
    ``preferred_channel`` and one ``channel_<name>`` share column per channel seen; ``lifecycle``;
    ``p_alive`` (BG/NBD), ``churn_probability`` (P(no purchase within ``churn.horizon_days``),
    learned by :mod:`.churn`; NaN for prospects, and for everyone when the history is shorter than
    one labelled horizon: the schema metadata ``CHURN_ERROR_KEY`` then says why),
    ``expected_purchases_<h>d``, ``expected_avg_value``, ``clv_<h>d`` for the CLV horizon h (90 by
    default; NaN for prospects, and for everyone when the history cannot be fitted: the schema
    metadata ``CLV_ERROR_KEY`` then says why);
    ``interests`` (list<struct<tag, weight>>: time-decayed ``category:<path>`` at every depth and
    ``brand:<name>`` tags, top ``top_interests`` per kind, weights summing to 1 per kind).

    BG/NBD lets a customer drop out only after a repeat purchase, so a one-time buyer's
    ``p_alive`` is 1 however long ago they bought; ``churn_probability`` is the churn signal.
    Scores rank every purchaser given, so leave out pseudo-users first (per-order guest ids would
    fill the bottom frequency quintile and lift every real one-time buyer to F = 2).

    Args:
        events: events as ``scan_events()`` returns them (time-zone-aware ``timestamp``).
        items: the catalogue as ``scan_items()`` returns it (item_id, category, brand, price).
        as_of: the cut-off; events at or after it are ignored.
        config: purchase/return types, interest decay, lifecycle thresholds, CLV settings.

    Raises:
        ConfigError: naive or missing timestamps, empty events, ``as_of`` before every event,
            catalogue without its columns.
    """
    missing = [c for c in ("item_id", "category", "brand", "price") if c not in items.column_names]
    if missing:
        raise ConfigError(f"items: missing column(s) {missing}; pass the table scan_items() returns")
    history = _prepared(history_before(events, as_of), as_of, config)
    # One thread: parallel sums add floats in a scheduling-dependent order, and equal histories
    # must give bit-equal profiles.
    con = duckdb.connect(config={"threads": 1})
    try:
        con.register("h", history)
        con.register("items", _catalogue(items))
        base = con.sql(_BASE.format(top=config.top_interests)).to_arrow_table()
        channels = con.sql(_CHANNELS).to_arrow_table()
    finally:
        con.close()
    return finish_profiles(base, channels, history, items, as_of, config)


def finish_profiles(
    base: pa.Table, channels: pa.Table, history: pa.Table, items: pa.Table, as_of: datetime, config: ProfileConfig
) -> pa.Table:
    """The profile table from the per-user aggregates: what :func:`build_profiles` does after its SQL.

    The Spark engine (``shopsense.spark.profiles``) computes the same aggregates on a cluster and finishes
    here, so both engines share every formula that runs on one row per customer.

    Args:
        base: one row per user, ordered by user_id: first_event, first_purchase, last_purchase (epoch
            microseconds), orders, bought, returned, unit_price and interests, as ``_BASE`` selects them.
        channels: (user_id, channel, n) event counts per normalised channel name.
        history: events before ``as_of`` with user_id, type, timestamp and value; the purchases and returns
            and at least the earliest event are enough (CLV and churn read nothing else).
    """
    users = base.column("user_id").to_numpy(zero_copy_only=False).astype(str)
    order = np.argsort(users)
    summary = purchase_summary(history, as_of, config.purchase_types, config.return_types)
    buyers = _rows(users, order, summary.user_ids)
    end = as_of_micros(as_of)
    days_since = {
        name: (end - _floats(base, name)) / DAY_US for name in ("first_event", "first_purchase", "last_purchase")
    }
    frequency = np.zeros(len(users))
    frequency[buyers] = summary.days
    clv, clv_error = _clv(summary, buyers, len(users), config.clv)
    churn, churn_error, churn_model = _churn(history, as_of, summary, buyers, len(users), config)
    columns: dict[str, pa.Array | np.ndarray] = {
        "user_id": pc.cast(base.column("user_id"), pa.string()).combine_chunks(),
        "as_of": pa.array(np.full(len(users), end, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC")),
        **_rfm(days_since["last_purchase"], frequency, _floats(base, "bought") - _floats(base, "returned")),
        "first_purchase_days": days_since["first_purchase"],
        "tenure_days": days_since["first_event"],
        **_orders(base),
        "price_band": _price_band(_floats(base, "unit_price"), items),
        **_channels(channels, users, order),
        "lifecycle": _lifecycle(days_since["first_purchase"], days_since["last_purchase"], config),
        **{"p_alive": clv["p_alive"], "churn_probability": churn, **clv},
        "interests": pc.fill_null(pc.cast(base.column("interests"), INTEREST_TYPE), pa.scalar([], INTEREST_TYPE)),
    }
    notes = ((CLV_ERROR_KEY, clv_error), (CHURN_ERROR_KEY, churn_error), (CHURN_MODEL_KEY, churn_model))
    metadata = {key: text for key, text in notes if text}
    return pa.table(columns, metadata=metadata or None)


def _prepared(history: pa.Table, as_of: datetime, config: ProfileConfig) -> pa.Table:
    """History with epoch microseconds, purchase/return flags and each event's decayed interest weight."""
    if "item_id" not in history.column_names:
        raise ConfigError("events: missing column ['item_id']; pass the table scan_events() returns")
    for name, kind in _OPTIONAL.items():
        if name not in history.column_names:
            history = history.append_column(name, pa.nulls(history.num_rows, kind))
    micros = event_micros(history)
    encoded = pc.dictionary_encode(pc.cast(history.column("type"), pa.string()).combine_chunks())
    per_type = np.array([config.interest_weights.get(t, 0.0) for t in encoded.dictionary.to_pylist()], dtype=float)
    decay = 0.5 ** ((as_of_micros(as_of) - micros) / DAY_US / config.interest_half_life_days)
    extra = {
        "ts_us": micros,
        "is_p": type_flags(history, config.purchase_types),
        "is_r": type_flags(history, config.return_types),
        "w": per_type[encoded.indices.to_numpy(zero_copy_only=False)] * decay,
    }
    table = history.select(["user_id", "item_id", "type", "timestamp", "session_id", "channel", "quantity", "value"])
    for name, values in extra.items():
        table = table.append_column(name, pa.array(values))
    return table


_BASE = """WITH weighted AS (
    SELECT h.user_id, h.w, i.brand,
        list_filter(list_transform(i.category, lambda c: trim(c)), lambda c: c <> '') AS path
    FROM h JOIN items i USING (item_id) WHERE h.w <> 0
), tags AS (
    SELECT user_id, 'category' AS kind, 'category:' || array_to_string(path[1:depth], '/') AS tag, w
    FROM (SELECT *, unnest(generate_series(1, len(path))) AS depth FROM weighted WHERE len(path) > 0)
    UNION ALL
    SELECT user_id, 'brand', 'brand:' || trim(brand), w FROM weighted WHERE nullif(trim(brand), '') IS NOT NULL
), top AS (
    SELECT user_id, kind, tag, sum(w) AS score FROM tags GROUP BY user_id, kind, tag HAVING sum(w) > 0
    QUALIFY row_number() OVER (PARTITION BY user_id, kind ORDER BY sum(w) DESC, tag) <= {top}
), interests AS (
    SELECT user_id, list({{'tag': tag, 'weight': weight}} ORDER BY kind DESC, weight DESC, tag) AS interests
    FROM (SELECT *, score / sum(score) OVER (PARTITION BY user_id, kind) AS weight FROM top) GROUP BY user_id
), base AS (
    SELECT user_id,
        min(ts_us) AS first_event,
        min(ts_us) FILTER (is_p) AS first_purchase,
        max(ts_us) FILTER (is_p) AS last_purchase,
        count(DISTINCT coalesce(session_id, CAST(ts_us AS VARCHAR))) FILTER (is_p) AS orders,
        coalesce(sum(value) FILTER (is_p), 0) AS bought,
        coalesce(sum(value) FILTER (is_r), 0) AS returned,
        median(value / quantity) FILTER (is_p AND quantity > 0) AS unit_price
    FROM h GROUP BY user_id
)
SELECT base.*, interests.interests FROM base LEFT JOIN interests USING (user_id) ORDER BY user_id"""
"""Per-user aggregates and interest tags: a session id (else the purchase time) is one order; tags are
decayed interest summed per tag, kept when positive, top N per kind, shares of their kind's total."""
_CHANNELS = """SELECT user_id, trim(regexp_replace(lower(channel), '[^a-z0-9]+', '_', 'g'), '_') AS channel,
    count(*) AS n
FROM h WHERE nullif(trim(channel), '') IS NOT NULL GROUP BY ALL"""


def _catalogue(items: pa.Table) -> pa.Table:
    """Item id, category path and brand; a category given as text ("Home > Kitchen") is split on ">"."""
    category = items.column("category")
    if pa.types.is_string(category.type) or pa.types.is_large_string(category.type):
        category = pc.split_pattern(category, ">")
    return pa.table({"item_id": items.column("item_id"), "category": category, "brand": items.column("brand")})


def _rfm(recency: np.ndarray, frequency: np.ndarray, monetary: np.ndarray) -> dict[str, np.ndarray]:
    """Recency, frequency, monetary, their quintile scores among purchasers (0 otherwise) and the segment."""
    bought = ~np.isnan(recency)
    scores = {name: np.zeros(len(recency), dtype=np.int8) for name in ("r_score", "f_score", "m_score")}
    scores["r_score"][bought] = quintile_scores(recency[bought], higher_is_better=False)
    scores["f_score"][bought] = quintile_scores(frequency[bought])
    scores["m_score"][bought] = quintile_scores(monetary[bought])
    segment = rfm_segment_names(scores["r_score"], scores["f_score"], scores["m_score"])
    return {"recency_days": recency, "frequency": frequency, "monetary": monetary, **scores, "rfm_segment": segment}


def _orders(base: pa.Table) -> dict[str, np.ndarray]:
    """Order count, purchase value per order and the share of purchased value returned."""
    orders = np.asarray(base.column("orders").to_numpy(zero_copy_only=False), dtype=np.int64)
    bought, returned = _floats(base, "bought"), _floats(base, "returned")
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "orders": orders,
            "avg_order_value": np.where(orders > 0, bought / orders, np.nan),
            "returns_share": np.where(bought > 0, returned / bought, np.nan),
        }


def _price_band(unit_price: np.ndarray, items: pa.Table) -> pa.Array:
    """Budget below the catalogue's lower price tercile, premium above its upper one, mid between."""
    prices = _floats(items, "price")
    prices = prices[np.isfinite(prices) & (prices > 0)]
    if len(prices) == 0:
        return pa.nulls(len(unit_price), pa.string())
    low, high = np.quantile(prices, [1 / 3, 2 / 3])
    band = np.where(unit_price < low, "budget", np.where(unit_price > high, "premium", "mid"))
    return pa.array(band, pa.string(), mask=np.isnan(unit_price))


def _channels(channels: pa.Table, users: np.ndarray, order: np.ndarray) -> dict[str, pa.Array | np.ndarray]:
    """Share of each user's events per channel and the most used one (ties: alphabetical first)."""
    if channels.num_rows == 0:
        return {"preferred_channel": pa.nulls(len(users), pa.string())}
    names, codes = user_codes(channels.column("channel"))
    rows = _rows(users, order, channels.column("user_id").to_numpy(zero_copy_only=False).astype(str))
    flat = rows * len(names) + codes
    counts = np.bincount(flat, weights=channels.column("n").to_numpy(), minlength=len(users) * len(names))
    counts = counts.reshape(len(users), len(names))
    total = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = counts / total[:, None]
    out: dict[str, pa.Array | np.ndarray] = {
        "preferred_channel": pa.array(names[counts.argmax(axis=1)], pa.string(), mask=total == 0)
    }
    out.update({f"channel_{name}": shares[:, j] for j, name in enumerate(names)})
    return out


def _lifecycle(first_purchase_days: np.ndarray, recency: np.ndarray, config: ProfileConfig) -> np.ndarray:
    """Stage of each customer; the thresholds are documented on :class:`ProfileConfig`."""
    stages = np.select(
        [
            np.isnan(recency),
            first_purchase_days <= config.new_days,
            recency <= config.active_days,
            recency <= config.lapsed_days,
        ],
        ["prospect", "new", "active", "at_risk"],
        "lapsed",
    )
    return np.asarray(stages, dtype=str)


def _clv(
    summary: PurchaseSummary, rows: np.ndarray, n_users: int, config: ClvConfig
) -> tuple[dict[str, np.ndarray], str]:
    """BG/NBD + Gamma-Gamma forecasts on the profile rows, and why they are NaN when the history cannot be fitted.

    A profile table is still useful without CLV (too short a history, no dropout yet), so a
    :class:`ClvFitError` leaves the CLV columns NaN and its message in the table's metadata.
    """
    horizon = f"{config.horizon_days:g}"
    alive, purchases, value = (np.full(n_users, np.nan) for _ in range(3))
    try:
        forecast = ClvModel(config).fit(summary).predict(summary)
    except ClvFitError as exc:
        reason = str(exc)
        log.warning("profiles without CLV: %s", reason)
    else:
        reason = ""
        alive[rows], purchases[rows] = forecast.p_alive, forecast.expected_purchases
        value[rows] = forecast.expected_avg_value
    columns = {
        "p_alive": alive,
        f"expected_purchases_{horizon}d": purchases,
        "expected_avg_value": value,
        f"clv_{horizon}d": purchases * value,
    }
    return columns, reason


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    return np.asarray(
        pc.fill_null(pc.cast(table.column(name), pa.float64()), np.nan).to_numpy(zero_copy_only=False), dtype=float
    )


def _rows(users: np.ndarray, order: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Profile row of each id; all ids come from the same history, so every one is a profile user."""
    at, _ = locate(users[order], ids)
    return np.asarray(order[at], dtype=np.int64)


def _churn(
    history: pa.Table, as_of: datetime, summary: PurchaseSummary, rows: np.ndarray, n_users: int, config: ProfileConfig
) -> tuple[np.ndarray, str, str]:
    """Churn risk of every purchaser (NaN for prospects); why it is NaN for all when no model could be
    fitted, else the model's horizon, held-out AUC and sizes as JSON."""
    risk = np.full(n_users, np.nan)
    try:
        model = fit_churn(history, as_of, config.churn, config.purchase_types, config.return_types)
    except ChurnFitError as exc:
        log.warning("profiles without churn risk: %s", exc)
        return risk, str(exc), ""
    risk[rows] = model.predict(summary)
    facts = {
        "horizon_days": model.horizon_days,
        "validation_auc": round(model.validation_auc, 4) if np.isfinite(model.validation_auc) else None,
        "customers": model.customers,
        "churned_share": round(model.churned_share, 4),
    }
    return risk, "", json.dumps(facts)
