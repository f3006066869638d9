"""Audiences: propensity on the synthetic shop (held-out AUC, lift on a later window, no leakage), hand-built
known answers for target features and the fallback, exclusions as properties, lookalikes of a planted
cluster, atomic export and clear errors for bad targets."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopsense.errors import ConfigError
from shopsense.features.profiles import build_profiles
from shopsense.marketing.audiences import (
    Audience,
    AudienceSpec,
    PropensityModel,
    PropensityReport,
    PropensityScores,
    Target,
    build_audience,
    export_audience,
    lookalike,
)
from shopsense.marketing.expressions import ExpressionError
from shopsense.models.base import NotFitted

AS_OF = datetime(2024, 2, 15, tzinfo=UTC)  # day 45 of the synthetic shop's 60 days
HOME = Target(category="home")  # the shop's category with the most buyers, in lower case on purpose


@pytest.fixture(scope="module")
def home_scores(shop_tables: tuple[pa.Table, pa.Table]) -> tuple[PropensityModel, PropensityScores]:
    events, items = shop_tables
    model = PropensityModel().fit(events, items, HOME, AS_OF)
    return model, model.score(events, items, AS_OF)


def _buyers(events: pa.Table, items: pa.Table, department: str, start: datetime, end: datetime) -> set[str]:
    """Users who bought an item of ``department`` in [start, end), computed independently of the module."""
    in_department = pc.starts_with(items.column("category"), f"{department} >")
    ids = items.column("item_id").filter(in_department)
    time = events.column("timestamp")
    keep = pc.and_(
        pc.and_(pc.equal(events.column("type"), "purchase"), pc.is_in(events.column("item_id"), value_set=ids)),
        pc.and_(pc.greater_equal(time, pa.scalar(start)), pc.less(time, pa.scalar(end))),
    )
    return set(events.column("user_id").filter(keep).to_pylist())


def _before(events: pa.Table, cut: datetime) -> set[str]:
    """Users with any event before ``cut``: the customers a model trained at that cut knows."""
    return set(events.column("user_id").filter(pc.less(events.column("timestamp"), pa.scalar(cut))).to_pylist())


def test_propensity_ranks_future_buyers_of_a_popular_category(
    shop_tables: tuple[pa.Table, pa.Table], home_scores: tuple[PropensityModel, PropensityScores]
) -> None:
    events, items = shop_tables
    model, scores = home_scores
    report = model.report_
    assert report.method == "lightgbm"
    assert report.positives >= 20
    assert report.valid_auc > 0.6
    # Training rows are the customers known at the cut, labels their Home purchases in [cut, as_of).
    cut = AS_OF - timedelta(days=30)
    assert report.customers == len(_before(events, cut))
    assert report.positives == len(_buyers(events, items, "Home", cut, AS_OF) & _before(events, cut))
    # A later window the model never saw: the top decile buys Home far more often than everyone.
    later = _buyers(events, items, "Home", AS_OF, AS_OF + timedelta(days=15))
    users = np.array(scores.table.column("user_id").to_pylist())
    bought = np.isin(users, list(later))
    top = np.argsort(-scores.table.column("score").to_numpy(), kind="stable")[: len(users) // 10]
    assert bought.mean() > 0.02
    assert bought[top].mean() > 2 * bought.mean()
    assert set(scores.table.column("main_reason").to_pylist()) - {"no single strong signal"}


def test_events_at_or_after_as_of_change_no_score(
    shop_tables: tuple[pa.Table, pa.Table], home_scores: tuple[PropensityModel, PropensityScores]
) -> None:
    events, items = shop_tables
    model, scores = home_scores
    # Every customer buys a Home item at as_of and an hour later; a newcomer appears; nothing may move.
    users = [*scores.table.column("user_id").to_pylist(), "newcomer"]
    home_item = items.column("item_id").filter(pc.starts_with(items.column("category"), "Home >"))[0].as_py()
    future = pa.table(
        {
            "user_id": users * 2,
            "item_id": [home_item] * (2 * len(users)),
            "type": ["purchase"] * (2 * len(users)),
            "timestamp": pa.array([AS_OF] * len(users) + [AS_OF + timedelta(hours=1)] * len(users)).cast(
                events.schema.field("timestamp").type
            ),
            "value": [99.0] * (2 * len(users)),
        }
    )
    extended = pa.concat_tables([events, future], promote_options="default")
    again = PropensityModel().fit(extended, items, HOME, AS_OF)
    rescored = again.score(extended, items, AS_OF)
    assert again.report_ == model.report_
    assert rescored.table.equals(scores.table)


# Two items, two customers; as_of 2024-03-01, so the 30-day cut is 2024-01-31.
ITEMS = pa.table(
    {
        "item_id": ["i1", "i2"],
        "category": [["Garden", "Tools"], ["Home", "Decor"]],
        "brand": ["Acme", "Zen"],
        "price": [10.0, 20.0],
    }
)
TINY_AS_OF = datetime(2024, 3, 1, tzinfo=UTC)


def _tiny_events() -> pa.Table:
    rows = [("a", "i1", "cart", 40), ("a", "i1", "purchase", 10), ("a", "i1", "view", 3), ("b", "i2", "purchase", 50)]
    rows.append(("b", "i2", "view", 5))
    users, item_ids, types, days = zip(*rows, strict=True)
    return pa.table(
        {
            "user_id": list(users),
            "item_id": list(item_ids),
            "type": list(types),
            "timestamp": pa.array([TINY_AS_OF - timedelta(days=d) for d in days], pa.timestamp("us", tz="UTC")),
            "value": [10.0 if t == "purchase" else None for t in types],
        }
    )


def test_target_features_and_the_fallback_have_known_values() -> None:
    events = _tiny_events()
    model = PropensityModel().fit(events, ITEMS, Target(category="GARDEN"), TINY_AS_OF)
    assert model.report_.method == "smoothed_rate"
    assert (model.report_.customers, model.report_.positives) == (2, 1)  # a bought i1 in the label window
    assert "too few" in model.report_.note and math.isnan(model.report_.valid_auc)
    table = model.score(events, ITEMS, TINY_AS_OF).table
    rows = {row["user_id"]: row for row in table.to_pylist()}
    a, b = rows["a"], rows["b"]
    assert (a["target_views_7d"], a["target_views_30d"], a["target_carts_30d"], a["target_carts_90d"]) == (1, 1, 0, 1)
    assert (a["target_purchases_7d"], a["target_purchases_30d"]) == (0, 1)
    assert (a["target_last_interaction_days"], a["target_last_purchase_days"]) == (3, 10)
    assert a["interest_category"] == pytest.approx(0.5)  # "Garden" and "Garden/Tools" share a's category interest
    assert b["target_views_90d"] == 0 and b["target_last_purchase_days"] is None and b["interest_category"] == 0
    # Fallback: 1 purchase in 90 days over a's 40 and b's 50 days of tenure, shrunk with 30 prior days.
    shop_rate = 1 / 90
    for row, bought, tenure in ((a, 1, 40), (b, 0, 50)):
        rate = (bought + 30 * shop_rate) / (tenure + 30)
        assert row["score"] == pytest.approx(1 - math.exp(-30 * rate))
    assert a["main_reason"] == "purchases of the target in the last 90 days" and b["main_reason"] == "shop-wide rate"


def test_targets_resolve_to_items_and_interest_tags() -> None:
    tools = Target(category=" tools ").resolve(ITEMS)
    assert tools.item_ids.to_pylist() == ["i1"]
    assert (tools.category_tags, tools.brand_tags) == ({"category:garden/tools"}, frozenset())
    item = Target(item_id="i2").resolve(ITEMS)
    assert (item.category_tags, item.brand_tags) == ({"category:home/decor"}, {"brand:zen"})
    text_paths = ITEMS.set_column(1, "category", pa.array(["Garden > Tools", "Home > Decor"]))
    assert Target(brand="acme").resolve(text_paths).item_ids.to_pylist() == ["i1"]
    assert Target(category="home").resolve(text_paths).category_tags == {"category:home"}


def test_bad_targets_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="exactly one of item_id, category, brand; got none"):
        Target()
    with pytest.raises(ConfigError, match=r"got \['item_id', 'brand'\]"):
        Target(item_id="i1", brand="Acme")
    with pytest.raises(ConfigError, match="target category is empty"):
        Target(category="  ")
    with pytest.raises(ConfigError, match=r"unknown target category 'Gardn'.*did you mean 'Garden'\?"):
        Target(category="Gardn").resolve(ITEMS)
    with pytest.raises(ConfigError, match=r"unknown target brand 'acm'.*did you mean 'Acme'\?"):
        Target(brand="acm").resolve(ITEMS)
    with pytest.raises(ConfigError, match="unknown target item_id 'zzz'"):
        Target(item_id="zzz").resolve(ITEMS)
    with pytest.raises(ConfigError, match=r"missing column\(s\) \['brand'\]"):
        Target(brand="Acme").resolve(ITEMS.drop_columns(["brand"]))
    with pytest.raises(ConfigError, match="at or before the first event"):
        PropensityModel().fit(_tiny_events(), ITEMS, Target(brand="Acme"), TINY_AS_OF - timedelta(days=25))
    with pytest.raises(NotFitted):
        PropensityModel().score(_tiny_events(), ITEMS, TINY_AS_OF)


def test_score_refuses_profiles_of_another_time() -> None:
    events = _tiny_events()
    model = PropensityModel().fit(events, ITEMS, Target(brand="Acme"), TINY_AS_OF)
    stale = build_profiles(events, ITEMS, TINY_AS_OF - timedelta(days=1))
    with pytest.raises(ConfigError, match="profiles were built for"):
        model.score(events, ITEMS, TINY_AS_OF, profiles=stale)


def _scores(score: list[float], last_purchase: list[float]) -> PropensityScores:
    n = len(score)
    table = pa.table(
        {
            "user_id": [f"u{i:02d}" for i in range(n)],
            "score": pa.array(score, pa.float64()),
            "main_reason": ["r"] * n,
            "target_last_purchase_days": pa.array(last_purchase, pa.float64()),
            "interest_category": np.zeros(n),
            "interest_brand": np.zeros(n),
        }
    )
    report = PropensityReport("lightgbm", n, 1, 0.7, 5, "test")
    return PropensityScores(table, Target(brand="Acme"), TINY_AS_OF, 30.0, report)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.one_of(st.just(math.nan), st.integers(0, 60).map(float)),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    top_n=st.one_of(st.none(), st.integers(1, 40)),
    min_score=st.one_of(st.none(), st.floats(0, 1)),
    days=st.one_of(st.none(), st.integers(1, 60).map(float)),
)
def test_exclusions_are_honoured_and_the_best_eligible_are_kept(
    data: list[tuple[float, float, bool, bool]], top_n: int | None, min_score: float | None, days: float | None
) -> None:
    score, last, in_segment, contacted = (list(column) for column in zip(*data, strict=True))
    scores = _scores(score, last)
    ids = np.array(scores.table.column("user_id").to_pylist())
    spec = AudienceSpec(top_n=top_n, min_score=min_score, exclude_bought_within_days=days)
    audience = build_audience(scores, spec, segment=np.array(in_segment), contacted=ids[np.array(contacted)])
    eligible = np.array(in_segment) & ~np.array(contacted)
    if days is not None:
        eligible &= ~(np.array(last) <= days)
    if min_score is not None:
        eligible &= np.array(score) >= min_score
    chosen = audience.table.column("user_id").to_pylist()
    picked = np.isin(ids, chosen)
    assert not (picked & ~eligible).any()
    assert len(chosen) == (eligible.sum() if top_n is None else min(top_n, eligible.sum()))
    got = audience.table.column("score").to_numpy()
    assert (np.diff(got) <= 0).all() and audience.table.column("rank").to_pylist() == list(range(1, len(chosen) + 1))
    left = np.array(score)[eligible & ~picked]
    assert not len(chosen) or not len(left) or left.max() <= got.min()
    assert audience.funnel["selected"] == len(chosen)
    assert sum(v for k, v in audience.funnel.items() if k not in ("scored", "selected")) == len(ids) - len(chosen)


def test_an_expression_segment_and_the_summary() -> None:
    scores = _scores([0.9, 0.8, 0.7, 0.1], [math.nan, 30.0, math.nan, math.nan])
    profiles = pa.table(
        {"user_id": ["u03", "u02", "u01", "u00"], "lifecycle": ["active", "lapsed", "active", "active"]}
    )
    audience = build_audience(
        scores,
        AudienceSpec(exclude_bought_within_days=30),
        segment='lifecycle == "active"',
        profiles=profiles,
        contacted=["u03"],
    )
    assert isinstance(audience, Audience)
    assert audience.table.column("user_id").to_pylist() == ["u00"]  # u02 outside, u01 bought 30 days ago, u03 contacted
    assert list(audience.table.column_names) == [
        "user_id",
        "score",
        "rank",
        "main_reason",
        "interest_category",
        "interest_brand",
    ]
    text = audience.describe()
    assert "Audience for brand 'Acme'" in text and "outside the segment: 1" in text
    assert "bought the target within 30 days: 1" in text and "already contacted: 1" in text
    assert "expected buyers in 30 days: 0.9" in text
    with pytest.raises(ConfigError, match="needs the profiles"):
        build_audience(scores, segment="lifecycle == 'active'")
    with pytest.raises(ExpressionError, match="unknown field"):
        build_audience(scores, segment="lifecyle == 'active'", profiles=profiles)
    with pytest.raises(ConfigError, match=r"expected bool \(4,\)"):
        build_audience(scores, segment=np.ones(3, dtype=bool))


def _planted_profiles() -> pa.Table:
    """200 customers; the first 30 spend a lot, often, and love Garden; the rest are spread out."""
    rng = np.random.default_rng(7)
    n, cluster = 200, 30
    tags = ["category:Garden", "category:Home", "category:Toys", "category:Books", "brand:Acme", "brand:Zen"]
    frequency = np.where(np.arange(n) < cluster, rng.normal(12, 1, n), rng.gamma(2, 1.5, n))
    monetary = np.where(np.arange(n) < cluster, rng.normal(900, 50, n), rng.gamma(2, 60, n))
    interests = [
        [{"tag": "category:Garden", "weight": 1.0}, {"tag": "brand:Acme", "weight": 1.0}]
        if i < cluster
        else [{"tag": tags[j], "weight": 1.0} for j in sorted(set(rng.integers(1, 6, 2).tolist()))]
        for i in range(n)
    ]
    return pa.table(
        {
            "user_id": [f"c{i:03d}" for i in range(n)],
            "frequency": frequency,
            "monetary": monetary,
            "recency_days": np.where(np.arange(n) < cluster, rng.uniform(0, 10, n), rng.uniform(0, 200, n)),
            "p_alive": np.full(n, np.nan),  # as when CLV could not be fitted: ignored, not an error
            "lifecycle": ["x"] * n,
            "interests": interests,
        }
    )


def test_lookalike_finds_the_rest_of_a_planted_cluster() -> None:
    profiles = _planted_profiles()
    seeds = [f"c{i:03d}" for i in range(10)]
    found = lookalike(profiles, [*seeds, "unknown"], 20)
    ids = found.column("user_id").to_pylist()
    assert len(ids) == 20 and not set(ids) & set(seeds)
    assert sum(int(i[1:]) < 30 for i in ids) >= 18
    assert (np.diff(found.column("similarity").to_numpy()) <= 0).all()
    assert found.equals(lookalike(profiles, seeds, 20))
    by_interest = lookalike(profiles, seeds, 20, features=["interests"]).column("user_id").to_pylist()
    assert all(int(i[1:]) < 30 for i in by_interest)  # only the cluster shares Garden and Acme
    assert lookalike(profiles, seeds, 500).num_rows == 190
    with pytest.raises(ConfigError, match=r"'monetry' is not a numeric profile column; did you mean 'monetary'\?"):
        lookalike(profiles, seeds, 5, features=["monetry"])
    with pytest.raises(ConfigError, match="none of the 1 seed user ids has a profile"):
        lookalike(profiles, ["nobody"], 5)
    with pytest.raises(ConfigError, match="at least 1"):
        lookalike(profiles, seeds, 0)


def test_lookalike_without_any_interest_tags_uses_the_numeric_profile() -> None:
    planted = _planted_profiles()
    empty = pa.array([[]] * planted.num_rows, planted.schema.field("interests").type)
    profiles = planted.set_column(planted.column_names.index("interests"), "interests", empty)  # no categories
    found = lookalike(profiles, [f"c{i:03d}" for i in range(10)], 20).column("user_id").to_pylist()
    assert sum(int(i[1:]) < 30 for i in found) >= 18, "spend, frequency and recency still find the cluster"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trips_and_replaces_atomically(tmp_path: Path, suffix: str) -> None:
    table = pa.table({"user_id": ["u1", "u2"], "score": [0.9, 0.4], "rank": [1, 2], "main_reason": ["a", "b"]})
    path = tmp_path / f"audience{suffix}"
    path.write_text("old")
    assert export_audience(table, path) == path
    back = pacsv.read_csv(path) if suffix == ".csv" else pq.read_table(path)
    assert back.equals(table)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_export_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    table = pa.table({"user_id": ["u1"], "tags": [["a"]]})
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet, not '\.xlsx'"):
        export_audience(table, tmp_path / "a.xlsx")
    with pytest.raises(ConfigError, match="does not exist"):
        export_audience(table, tmp_path / "missing" / "a.csv")
    with pytest.raises(ConfigError, match=r"nested column\(s\) \['tags'\]"):
        export_audience(table, tmp_path / "a.csv")
    assert not list(tmp_path.iterdir())
