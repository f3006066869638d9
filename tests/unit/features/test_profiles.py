"""Customer profiles: RFM, returns, lifecycle, interests, price band, channels, leakage, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shopsense.errors import ConfigError
from shopsense.features.churn import ChurnConfig
from shopsense.features.profiles import (
    CHURN_ERROR_KEY,
    CHURN_MODEL_KEY,
    CLV_ERROR_KEY,
    INTEREST_TYPE,
    ProfileConfig,
    build_profiles,
)
from shopsense.services.data import DataService
from tests.conftest import DATA

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
ITEMS = pa.table(
    {
        "item_id": ["A", "B", "C", "D", "E", "F"],
        "category": [["Home", "Kitchen"], ["Garden"], ["Toys"], None, ["Home"], ["Garden", "Tools"]],
        "brand": ["Acme", "Bloom", None, "Acme", "Acme", "Bloom"],
        "price": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],  # terciles 26.67 and 43.33
    }
)

Row = tuple[str, str, str, float, float]  # user, item, type, days before AS_OF, value


def _events(rows: list[Row], channels: list[str] | None = None, quantity: float = 1.0) -> pa.Table:
    users, items, types, ages, values = zip(*rows, strict=True)
    return pa.table(
        {
            "user_id": list(users),
            "item_id": list(items),
            "type": list(types),
            "timestamp": pa.array([AS_OF - timedelta(days=d) for d in ages], pa.timestamp("us", tz="UTC")),
            "channel": channels or ["web"] * len(rows),
            "session_id": [f"s{n}" for n in range(len(rows))],
            "quantity": [quantity] * len(rows),
            "value": pa.array(values, pa.float64()),
        }
    )


def _by_user(profiles: pa.Table) -> dict[str, dict[str, object]]:
    return {row["user_id"]: row for row in profiles.to_pylist()}


RFM_ROWS: list[Row] = [
    *[("u1", "A", "purchase", d, 100.0) for d in (1, 10, 20, 30, 40)],
    *[("u2", "B", "purchase", d, 50.0) for d in (5, 15, 25, 35)],
    *[("u3", "C", "purchase", d, 60.0) for d in (50, 60, 70)],
    *[("u4", "D", "purchase", d, 200.0) for d in (100, 110)],
    ("u4", "D", "return", 99, 100.0),
    ("u5", "E", "purchase", 200, 30.0),
    ("u6", "A", "view", 3, float("nan")),
]


def test_rfm_scores_segments_and_returns_on_known_customers() -> None:
    profiles = _by_user(build_profiles(_events(RFM_ROWS), ITEMS, AS_OF))
    expected = {  # recency, frequency, monetary, R, F, M, segment
        "u1": (1.0, 5.0, 500.0, 5, 5, 5, "Champions"),
        "u2": (5.0, 4.0, 200.0, 4, 4, 3, "Loyal customers"),
        "u3": (50.0, 3.0, 180.0, 3, 3, 2, "Need attention"),
        "u4": (100.0, 2.0, 300.0, 2, 2, 4, "At risk"),  # 400 bought, 100 returned
        "u5": (200.0, 1.0, 30.0, 1, 1, 1, "Lost"),
    }
    for user, (recency, frequency, monetary, r, f, m, segment) in expected.items():
        row = profiles[user]
        assert row["recency_days"] == pytest.approx(recency)
        assert (row["frequency"], row["monetary"]) == (frequency, monetary)
        assert (row["r_score"], row["f_score"], row["m_score"], row["rfm_segment"]) == (r, f, m, segment)
    assert profiles["u4"]["returns_share"] == pytest.approx(0.25)
    assert profiles["u4"]["orders"] == 2 and profiles["u4"]["avg_order_value"] == 200.0
    prospect = profiles["u6"]
    assert (prospect["r_score"], prospect["rfm_segment"], prospect["lifecycle"]) == (0, "Prospect", "prospect")
    assert np.isnan(prospect["recency_days"]) and prospect["frequency"] == 0 and prospect["orders"] == 0
    assert prospect["tenure_days"] == pytest.approx(3.0)


def test_too_short_a_history_leaves_clv_unknown_and_says_why() -> None:
    profiles = build_profiles(_events(RFM_ROWS), ITEMS, AS_OF)
    assert np.isnan(profiles["clv_90d"].to_numpy()).all() and np.isnan(profiles["p_alive"].to_numpy()).all()
    reason = profiles.schema.metadata[CLV_ERROR_KEY.encode()].decode()
    assert "repeat purchasers" in reason and "has 4 of 5 purchasers" in reason


def test_too_short_a_history_leaves_churn_unknown_and_says_why() -> None:
    profiles = build_profiles(_events(RFM_ROWS), ITEMS, AS_OF)
    assert np.isnan(profiles["churn_probability"].to_numpy()).all()
    reason = profiles.schema.metadata[CHURN_ERROR_KEY.encode()].decode()
    assert "at least 20 churned and 20 retained" in reason


def test_churn_risk_is_learned_from_the_last_horizon_and_rises_with_silence(
    shop_tables: tuple[pa.Table, pa.Table],
) -> None:
    events, items = shop_tables
    as_of = pc.max(events["timestamp"]).as_py() + timedelta(seconds=1)
    profiles = build_profiles(events, items, as_of, ProfileConfig(churn=ChurnConfig(horizon_days=14)))
    assert CHURN_ERROR_KEY.encode() not in (profiles.schema.metadata or {})
    risk, recency = profiles["churn_probability"].to_numpy(), profiles["recency_days"].to_numpy()
    bought = ~np.isnan(recency)
    assert np.isnan(risk[~bought]).all() and ((risk[bought] >= 0) & (risk[bought] <= 1)).all()
    quiet, busy = np.nanquantile(recency, [0.75, 0.25])
    assert risk[recency >= quiet].mean() > risk[recency <= busy].mean() + 0.05


def test_lifecycle_stages_at_their_documented_thresholds() -> None:
    rows: list[Row] = [
        ("new", "A", "purchase", 10, 5.0),
        ("active", "A", "purchase", 200, 5.0),
        ("active", "A", "purchase", 90, 5.0),  # exactly 90 days: still active
        ("at_risk", "A", "purchase", 120, 5.0),
        ("lapsed", "A", "purchase", 181, 5.0),
        ("prospect", "A", "cart", 1, float("nan")),
    ]
    profiles = build_profiles(_events(rows), ITEMS, AS_OF)
    assert dict(zip(profiles["user_id"].to_pylist(), profiles["lifecycle"].to_pylist(), strict=True)) == {
        "new": "new",
        "active": "active",
        "at_risk": "at_risk",
        "lapsed": "lapsed",
        "prospect": "prospect",
    }
    stricter = build_profiles(_events(rows), ITEMS, AS_OF, ProfileConfig(active_days=60, lapsed_days=100))
    assert stricter["lifecycle"].to_pylist()[stricter["user_id"].to_pylist().index("active")] == "at_risk"


def test_interests_decay_with_age_and_sum_to_one_per_kind() -> None:
    half_life = 30.0
    rows: list[Row] = [("x", "A", "purchase", 120, 10.0), ("x", "B", "purchase", 1, 10.0)]
    profiles = build_profiles(_events(rows), ITEMS, AS_OF, ProfileConfig(interest_half_life_days=half_life))
    assert profiles.schema.field("interests").type == INTEREST_TYPE
    tags = {t["tag"]: t["weight"] for t in profiles["interests"][0].as_py()}
    old, new = 0.5 ** (120 / half_life), 0.5 ** (1 / half_life)  # same type and count: only age differs
    assert tags == pytest.approx(
        {
            "category:Home": old / (2 * old + new),
            "category:Home/Kitchen": old / (2 * old + new),
            "category:Garden": new / (2 * old + new),
            "brand:Acme": old / (old + new),
            "brand:Bloom": new / (old + new),
        }
    )
    assert tags["category:Garden"] > tags["category:Home"] and tags["brand:Bloom"] > tags["brand:Acme"]
    for kind in ("category:", "brand:"):
        assert sum(w for t, w in tags.items() if t.startswith(kind)) == pytest.approx(1.0)


def test_interests_keep_the_top_tags_and_returns_remove_interest() -> None:
    rows: list[Row] = [
        ("x", "A", "purchase", 1, 10.0),
        ("x", "F", "view", 1, float("nan")),
        ("x", "F", "view", 2, float("nan")),
        ("y", "B", "purchase", 5, 10.0),
        ("y", "B", "return", 4, 10.0),  # default weights: purchase 10, return -5 -> interest remains
    ]
    profiles = _by_user(build_profiles(_events(rows), ITEMS, AS_OF, ProfileConfig(top_interests=1)))
    x = profiles["x"]["interests"]
    assert [t["tag"] for t in x] == ["category:Home", "brand:Acme"] and [t["weight"] for t in x] == [1.0, 1.0]
    assert [t["tag"] for t in profiles["y"]["interests"]] == ["category:Garden", "brand:Bloom"]
    weights = {"purchase": 10.0, "view": 1.0, "return": -10.0}
    cancelled = _by_user(build_profiles(_events(rows), ITEMS, AS_OF, ProfileConfig(interest_weights=weights)))
    assert cancelled["y"]["interests"] == []  # bought, then returned at full weight: nothing left


def test_price_band_and_channel_shares() -> None:
    rows: list[Row] = [
        ("cheap", "A", "purchase", 1, 15.0),
        ("cheap", "A", "purchase", 2, 25.0),
        ("cheap", "A", "purchase", 3, 200.0),  # median of 15, 25, 200 is 25: budget
        ("middle", "B", "purchase", 1, 35.0),
        ("dear", "C", "purchase", 1, 55.0),
        ("browser", "C", "view", 1, float("nan")),
    ]
    channels = ["web", "Call Center", "web", "store", "app", "app"]
    profiles = _by_user(build_profiles(_events(rows, channels), ITEMS, AS_OF))
    assert {u: p["price_band"] for u, p in profiles.items()} == {
        "cheap": "budget",
        "middle": "mid",
        "dear": "premium",
        "browser": None,
    }
    cheap = profiles["cheap"]
    assert cheap["preferred_channel"] == "web"
    assert cheap["channel_web"] == pytest.approx(2 / 3) and cheap["channel_call_center"] == pytest.approx(1 / 3)
    assert cheap["channel_app"] == 0.0 and profiles["dear"]["preferred_channel"] == "app"


def test_unit_price_divides_the_line_value_by_its_quantity() -> None:
    profiles = build_profiles(_events([("bulk", "E", "purchase", 1, 50.0)], quantity=5.0), ITEMS, AS_OF)
    assert profiles["price_band"].to_pylist() == ["budget"]  # 10 a unit, not 50


def _as_json(table: pa.Table) -> str:
    return json.dumps(table.to_pylist(), default=str)  # NaN == NaN here, unlike Arrow's equals


def test_nothing_at_or_after_as_of_changes_any_output(shop_tables: tuple[pa.Table, pa.Table]) -> None:
    events, items = shop_tables
    times = events["timestamp"]
    as_of = pc.min_max(times)["min"].as_py() + timedelta(days=40)
    before = events.filter(pc.less(times, pa.scalar(as_of, times.type)))
    later = events.filter(pc.greater_equal(times, pa.scalar(as_of, times.type)))
    assert later.num_rows > 1000
    at_cut = before.slice(0, 50).set_column(
        events.schema.get_field_index("timestamp"), "timestamp", pa.array([as_of] * 50, times.type)
    )
    config = ProfileConfig(churn=ChurnConfig(horizon_days=14))
    full = build_profiles(events, items, as_of, config)
    notes = full.schema.metadata or {}
    assert CLV_ERROR_KEY.encode() not in notes and CHURN_ERROR_KEY.encode() not in notes  # both fitted
    assert json.loads(notes[CHURN_MODEL_KEY.encode()])["horizon_days"] == 14
    clv = full["clv_90d"].to_numpy()
    assert np.isfinite(clv[full["frequency"].to_numpy() > 0]).all()
    assert _as_json(full) == _as_json(build_profiles(before, items, as_of, config))
    assert _as_json(full) == _as_json(build_profiles(pa.concat_tables([before, at_cut]), items, as_of, config))
    assert pc.all(pc.equal(full["as_of"], pa.scalar(as_of, pa.timestamp("us", tz="UTC")))).as_py()
    later_profiles = build_profiles(events, items, as_of + timedelta(days=10), config)
    assert _as_json(later_profiles) != _as_json(full)  # the test can fail: later data does change profiles


def test_online_retail_sample_matches_the_raw_invoices(service: DataService) -> None:
    sample = DATA / "online_retail_sample.csv"
    service.import_dataset("online-retail", [sample])
    as_of = datetime(2010, 12, 3, tzinfo=UTC)  # London is on UTC in December
    profiles = build_profiles(service.store.scan_events(), service.store.scan_items(), as_of)
    raw = duckdb.sql(
        f"""SELECT CAST(CustomerID AS VARCHAR) AS user_id, round(sum(Quantity * UnitPrice), 2) AS monetary,
            count(DISTINCT InvoiceDate::DATE) FILTER (WHERE InvoiceNo NOT LIKE 'C%' AND Quantity > 0) AS days
        FROM read_csv('{sample}') WHERE InvoiceDate < '2010-12-03' AND CustomerID IS NOT NULL
            AND InvoiceNo NOT LIKE 'A%' GROUP BY 1"""
    ).fetchall()
    got = {r["user_id"]: r for r in profiles.to_pylist() if not r["user_id"].startswith("guest:")}
    assert len(got) == len(raw) > 20
    for user, monetary, days in raw:
        assert round(got[user]["monetary"], 2) == pytest.approx(monetary), user
        assert got[user]["frequency"] == days, user


def test_bad_input_is_refused_with_a_clear_error() -> None:
    events = _events(RFM_ROWS)
    naive = events.set_column(3, "timestamp", pc.cast(events["timestamp"], pa.timestamp("us")))
    with pytest.raises(ConfigError, match="time-zone-aware timestamp"):
        build_profiles(naive, ITEMS, AS_OF)
    with pytest.raises(ConfigError, match="empty"):
        build_profiles(events.slice(0, 0), ITEMS, AS_OF)
    with pytest.raises(ConfigError, match="before the first event"):
        build_profiles(events, ITEMS, AS_OF - timedelta(days=365))
    with pytest.raises(ConfigError, match="as_of must be a time-zone-aware datetime"):
        build_profiles(events, ITEMS, datetime(2024, 6, 1))
    with pytest.raises(ConfigError, match="items: missing column"):
        build_profiles(events, ITEMS.drop_columns(["brand"]), AS_OF)
    with pytest.raises(ValueError, match="active_days"):
        ProfileConfig(active_days=200, lapsed_days=100)
