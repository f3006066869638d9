"""Campaign experiments: validated configs, stable assignment, attribution by the window, and planted effects read out.

Small hand-built event tables pin every attribution rule to a known answer; seeded synthetic experiments with
20,000 users check that a planted conversion lift is found (and its interval covers the truth) while a null
campaign is mostly not called significant.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from shopsense.errors import ConfigError
from shopsense.marketing.assignment import assign
from shopsense.marketing.campaigns import (
    ASSIGNMENT_SCHEMA,
    CampaignConfig,
    assign_campaign,
    attribute,
    campaign_readout,
)
from shopsense.marketing.experiments import sample_ratio_check

START = datetime(2024, 5, 1, tzinfo=UTC)
END = datetime(2024, 5, 8, tzinfo=UTC)
UNTIL = END + timedelta(days=7)  # end of the measurement window with the default 7-day attribution
AS_OF = datetime(2024, 7, 1, tzinfo=UTC)
EVENT_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("type", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("channel", pa.string()),
        ("session_id", pa.string()),
        ("value", pa.float64()),
        ("context", pa.string()),
    ]
)


def base_values(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "spring",
        "channel": "Email",
        "start": "2024-05-01T00:00:00Z",
        "end": "2024-05-08T00:00:00Z",
        "cost_per_contact": 0.05,
        "variants": [
            {"name": "control", "weight": 0.5, "is_control": True},
            {"name": "coupon", "weight": 0.5, "treatment": "10% coupon", "offer_cost": 2.0},
        ],
    }
    return {**values, **overrides}


def config(**overrides: Any) -> CampaignConfig:
    return CampaignConfig.parse(base_values(**overrides))


def assignments(arms: dict[str, list[str]]) -> pa.Table:
    users = [(user, arm) for arm, ids in arms.items() for user in ids]
    return pa.table(
        {
            "user_id": [u for u, _ in users],
            "variant": [a for _, a in users],
            "assigned_at": pa.array([START] * len(users), ASSIGNMENT_SCHEMA.field("assigned_at").type),
        },
        schema=ASSIGNMENT_SCHEMA,
    )


def events(*rows: tuple[Any, ...]) -> pa.Table:
    """Rows of (user, item, type, time, channel, session, value, context); trailing fields may be left out."""
    full = [row + (None,) * (len(EVENT_SCHEMA) - len(row)) for row in rows]
    return pa.table({f.name: [r[i] for r in full] for i, f in enumerate(EVENT_SCHEMA)}, schema=EVENT_SCHEMA)


def by_name(outcomes: list[Any]) -> dict[str, Any]:
    return {o.name: o for o in outcomes}


# -- configuration --------------------------------------------------------------------------------------------


def test_toml_config_loads_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "spring.toml"
    path.write_text(
        """
name = "spring"
channel = "Email"
start = 2024-05-01T00:00:00Z
end = 2024-05-08T02:00:00+02:00
attribution_days = 3
primary_metric = "revenue_per_user"
target = { kind = "category", values = ["Kitchen"] }

[[variants]]
name = "holdout"
weight = 0.1
is_control = true

[[variants]]
name = "mail"
weight = 0.9
treatment = "e-mail with personalised recommendations"
""",
        encoding="utf-8",
    )
    loaded = CampaignConfig.from_toml(path)
    assert loaded.salt == "spring" and loaded.channel == "email" and loaded.control == "holdout"
    assert loaded.end == END and loaded.end.tzinfo is not None  # +02:00 read as the same instant
    assert loaded.measured_until(AS_OF) == END + timedelta(days=3)
    assert loaded.measured_until(START + timedelta(days=1)) == START + timedelta(days=1)
    assert [v.weight for v in loaded.split] == [0.1, 0.9]
    path.write_text(path.read_text(encoding="utf-8").replace("weight = 0.9", "weight = 0.9\nis_control = true"))
    with pytest.raises(ConfigError, match=rf"(?s)campaign file {path}.*exactly one variant must be the control"):
        CampaignConfig.from_toml(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "is_control": True},
                    {"name": "b", "weight": 0.5, "is_control": True},
                ]
            },
            "exactly one variant must be the control",
        ),
        ({"variants": [{"name": "a", "weight": 0.5, "is_control": True}, {"name": "b", "weight": 0.4}]}, "sum to 1"),
        ({"variants": [{"name": "a", "weight": 1.0, "is_control": True}]}, "at least one treatment"),
        ({"end": "2024-04-30T00:00:00Z"}, r"end \(2024-04-30T00:00:00\+00:00\) must be after start"),
        ({"start": "2024-05-01T00:00:00"}, "start: .*time zone"),
        ({"budget": 100}, "budget: Extra inputs are not permitted"),
        ({"primary_metric": "clicks"}, "primary_metric: .*'conversion', 'revenue_per_user' or 'ctr'"),
        ({"attribution_days": 0}, "attribution_days: .*greater than 0"),
        ({"target": {"kind": "colour", "values": ["red"]}}, "target.kind"),
    ],
)
def test_invalid_configs_say_what_is_wrong(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"(?s)invalid campaign config.*{message}"):
        config(**overrides)


# -- assignment -----------------------------------------------------------------------------------------------

IDS = [f"user-{i}" for i in range(20_000)]


def test_assignment_is_the_documented_hash_deterministic_and_balanced() -> None:
    camp = config()
    at = START - timedelta(days=1)
    table = assign_campaign(camp, IDS, at=at)
    assert table.schema.equals(ASSIGNMENT_SCHEMA)
    assert table.equals(assign_campaign(camp, pa.array(IDS), at=at))
    assert table.column("user_id").to_pylist() == IDS
    assert table.column("variant").to_pylist() == assign(IDS, "spring", camp.split).tolist()
    assert set(table.column("assigned_at").to_pylist()) == {at}
    counts = dict(zip(*np.unique(table.column("variant").to_numpy(), return_counts=True), strict=True))
    assert not sample_ratio_check({k: int(v) for k, v in counts.items()}, camp.split).mismatch
    assert abs(counts["coupon"] / len(IDS) - 0.5) < 0.01
    reshuffled = assign_campaign(config(salt="spring-2"), IDS, at=at).column("variant")
    assert 0.4 < np.mean(reshuffled.to_numpy() != table.column("variant").to_numpy()) < 0.6


def test_assigned_users_keep_their_arm_when_the_split_changes() -> None:
    first = assign_campaign(config(), IDS[:10_000], at=START)
    ramp = config(
        variants=[
            {"name": "control", "weight": 0.1, "is_control": True},
            {"name": "coupon", "weight": 0.9},
        ]
    )
    merged = assign_campaign(ramp, ["new-b", *IDS[5_000:12_000], "new-b"], previous=first, at=END)
    assert merged.slice(0, 10_000).equals(first)  # old rows untouched, timestamps included
    new = merged.slice(10_000)
    assert new.column("user_id").to_pylist() == ["new-b", *IDS[10_000:12_000]]  # each new user once, in order
    assert new.column("variant").to_pylist() == assign(new.column("user_id"), "spring", ramp.split).tolist()
    assert set(new.column("assigned_at").to_pylist()) == {END}
    # The test means something: re-hashing the old users under the new split would move many of them.
    moved = assign(IDS[:10_000], "spring", ramp.split) != first.column("variant").to_numpy()
    assert moved.sum() > 1_000


def test_bad_audiences_and_previous_tables_are_refused() -> None:
    camp = config()
    with pytest.raises(ConfigError, match=r"user_ids\[1\] is missing"):
        assign_campaign(camp, pa.array(["a", None]), at=START)
    with pytest.raises(ConfigError, match="user ids must be strings, got an Arrow array of int64"):
        assign_campaign(camp, pa.array([1, 2]), at=START)
    with pytest.raises(ConfigError, match="time-zone-aware"):
        assign_campaign(camp, ["a"], at=datetime(2024, 5, 1))
    foreign = assignments({"control": ["a"], "email-b": ["b"]})
    with pytest.raises(ConfigError, match=r"previous: variant\(s\) \['email-b'\] are not arms of campaign 'spring'"):
        assign_campaign(camp, ["c"], previous=foreign, at=START)
    with pytest.raises(ConfigError, match="previous: user 'a' is assigned more than once"):
        assign_campaign(camp, ["c"], previous=assignments({"control": ["a"], "coupon": ["a"]}), at=START)
    with pytest.raises(ConfigError, match=r"previous: missing column\(s\) \['assigned_at'\]"):
        assign_campaign(camp, ["c"], previous=foreign.drop_columns(["assigned_at"]), at=START)


# -- attribution ----------------------------------------------------------------------------------------------

SECOND = timedelta(seconds=1)


def test_only_the_measurement_window_counts_and_returns_subtract_revenue() -> None:
    users = assignments({"control": ["c1", "c2"], "coupon": ["t1", "t2"]})
    table = events(
        ("t1", "i1", "purchase", START - SECOND, "web", "s0", 100.0),  # before start
        ("t1", "i1", "purchase", START, "web", "s1", 10.0),
        ("t1", "i2", "purchase", START + timedelta(hours=1), "web", "s1", 5.0),  # same session: same order
        ("t1", "i1", "return", START + timedelta(days=2), "web", None, 4.0),
        ("t1", "i3", "purchase", UNTIL - SECOND, "app", None, 20.0),
        ("t1", "i3", "purchase", UNTIL, "app", None, 1000.0),  # after end + window
        ("c1", "i1", "purchase", START + timedelta(days=1), "store", None, 8.0),
        ("c1", "i1", "return", START + timedelta(days=3), "store", None, 50.0),  # floors revenue at 0
        ("t2", "i1", "purchase", START + timedelta(hours=10), "web", None, 1.0),
        ("t2", "i1", "purchase", START + timedelta(hours=15), "web", None, 2.0),  # no session: same day, one order
        ("t2", "i1", "purchase", START + timedelta(days=1, hours=1), "web", None, 3.0),
        ("t2", "i1", "view", START + timedelta(days=1), "web"),
    )
    outcomes = by_name(attribute(config(), users, table, as_of=AS_OF))
    assert outcomes["coupon"].revenue.tolist() == [31.0, 6.0]
    assert outcomes["coupon"].orders.tolist() == [2.0, 2.0]
    assert outcomes["coupon"].converted.tolist() == [1.0, 1.0]
    assert outcomes["control"].revenue.tolist() == [0.0, 0.0]
    assert outcomes["control"].orders.tolist() == [1.0, 0.0]
    assert outcomes["control"].converted.tolist() == [1.0, 0.0]
    assert outcomes["coupon"].cost_per_contact == 0.05 and outcomes["coupon"].offer_cost == 2.0
    # Nothing at or after as_of is read, even inside the window.
    early = by_name(attribute(config(), users, table, as_of=START + timedelta(days=2)))
    assert early["coupon"].revenue.tolist() == [15.0, 6.0] and early["coupon"].orders.tolist() == [1.0, 2.0]


def test_target_filter_counts_only_purchases_and_returns_of_the_target() -> None:
    users = assignments({"control": ["c1"], "coupon": ["t1", "t2"]})
    table = events(
        ("t1", "i1", "purchase", START + timedelta(days=1), "web", "a", 30.0),
        ("t1", "i2", "purchase", START + timedelta(days=1), "web", "a", 12.0),
        ("t1", "i1", "return", START + timedelta(days=2), "web", None, 10.0),
        ("t2", "i3", "purchase", START + timedelta(days=1), "web", "b", 7.0),
        ("c1", "i2", "purchase", START + timedelta(days=1), "web", "c", 9.0),
    )
    items = pa.table(
        {
            "item_id": ["i1", "i2", "i3"],
            "category": [["Home", "Kitchen"], ["Garden"], None],
            "brand": ["Acme", "Bolt", None],
        }
    )
    expected = {
        ("item", ("i2", "i9")): ([12.0, 0.0], [9.0]),
        ("category", ("Kitchen",)): ([20.0, 0.0], [0.0]),  # any level of the path
        ("brand", ("Bolt",)): ([12.0, 0.0], [9.0]),
    }
    for (kind, values), (coupon, control) in expected.items():
        camp = config(target={"kind": kind, "values": list(values)})
        outcomes = by_name(attribute(camp, users, table, as_of=AS_OF, items=items))
        assert outcomes["coupon"].revenue.tolist() == coupon, kind
        assert outcomes["coupon"].converted.tolist() == [1.0, 0.0], kind
        assert outcomes["control"].revenue.tolist() == control, kind
    untargeted = by_name(attribute(config(), users, table, as_of=AS_OF))
    assert untargeted["coupon"].revenue.tolist() == [32.0, 7.0]
    with pytest.raises(ConfigError, match="a brand target needs the catalogue"):
        attribute(config(target={"kind": "brand", "values": ["Acme"]}), users, table, as_of=AS_OF)


def test_clicks_count_after_contact_on_the_channel_or_by_campaign_tag() -> None:
    users = assignments({"control": ["c1"], "coupon": ["t1", "t2", "t3"]})
    sent = START + timedelta(days=1)
    exposures = pa.table(
        {"user_id": ["t1", "t2", "t2", "t3"], "timestamp": [sent, sent, sent + timedelta(days=1), END]},
        schema=pa.schema([("user_id", pa.string()), ("timestamp", pa.timestamp("ms", tz="UTC"))]),
    )
    table = events(
        ("t1", "i1", "click", sent + timedelta(hours=1), "email"),
        ("t1", "i1", "click", sent - timedelta(hours=1), "email"),  # before contact
        ("t1", "i1", "view", sent + timedelta(hours=2), "web"),  # another channel, untagged
        ("t1", "i1", "view", sent + timedelta(hours=3), "web", None, None, '{"campaign": "spring"}'),
        ("t1", "i1", "click", sent + timedelta(hours=4), "email", None, None, '{"campaign": "summer"}'),
        ("t1", "i1", "click", sent + timedelta(days=7) + SECOND, "email"),  # past the window after contact
        ("t1", "i1", "cart", sent + timedelta(hours=5), "email"),  # not a click type
        ("t2", "i1", "click", sent + timedelta(hours=1), "email", None, None, "not json"),
        # t3's only contact is logged at END, outside [start, end): never contacted, so its click does not count.
        ("t3", "i1", "click", END - timedelta(hours=1), "email"),
        ("c1", "i1", "click", sent + timedelta(hours=1), "email"),
    )
    outcomes = by_name(attribute(config(), users, table, exposures, as_of=AS_OF))
    assert outcomes["coupon"].exposed.tolist() == [1.0, 1.0, 0.0]
    assert outcomes["coupon"].clicks.tolist() == [2.0, 1.0, 0.0]
    assert outcomes["control"].exposed.tolist() == [0.0] and outcomes["control"].clicks.tolist() == [0.0]
    # Without an exposure log every treated user counts as contacted at the start.
    default = by_name(attribute(config(), users, table, as_of=AS_OF))
    assert default["coupon"].exposed.tolist() == [1.0, 1.0, 1.0]
    assert default["coupon"].clicks.tolist() == [3.0, 1.0, 1.0]
    contaminated = pa.concat_tables([exposures, pa.table({"user_id": ["c1"], "timestamp": [sent]}, exposures.schema)])
    with pytest.raises(ConfigError, match=r"contact 1 user\(s\) of the hold-out 'control' \(e.g. 'c1'\)"):
        attribute(config(), users, table, contaminated, as_of=AS_OF)


def test_bad_tables_and_times_are_refused() -> None:
    users = assignments({"control": ["c1"], "coupon": ["t1"]})
    table = events(("t1", "i1", "purchase", START, "web", None, 1.0))
    with pytest.raises(ConfigError, match=r"events: missing column\(s\) \['type'\]"):
        attribute(config(), users, table.drop_columns(["type"]), as_of=AS_OF)
    naive = table.set_column(3, "timestamp", pa.array([datetime(2024, 5, 2)], pa.timestamp("us")))
    with pytest.raises(ConfigError, match=r"events.timestamp is timestamp\[us\]; it must be a time-zone-aware"):
        attribute(config(), users, naive, as_of=AS_OF)
    with pytest.raises(ConfigError, match="is not after the start of campaign 'spring'"):
        attribute(config(), users, table, as_of=START)
    with pytest.raises(ConfigError, match="variant 'coupon' has no users"):
        attribute(config(), assignments({"control": ["c1"]}), table, as_of=AS_OF)


# -- read-out on synthetic experiments ------------------------------------------------------------------------


def planted_experiment(rates: dict[str, float], seed: int, n: int = 20_000) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """Assign ``n`` users, let each convert with its arm's rate inside the window, and add out-of-window noise.

    Returns the assignments, the events and the planted revenue per user (aligned to the assignments).
    """
    rng = np.random.default_rng(seed)
    users = assign_campaign(config(), [f"s{seed}-u{i}" for i in range(n)], at=START)
    ids = users.column("user_id").to_numpy()
    arm = users.column("variant").to_numpy()
    converts = rng.random(n) < np.select([arm == name for name in rates], list(rates.values()))
    spend = np.round(rng.lognormal(3.0, 1.0, n), 2) * converts
    span = (UNTIL - START).total_seconds()
    noise = rng.random(n) < 0.3  # buyers just outside the window on either side must not count
    offsets = np.concatenate(
        [rng.uniform(0, span, converts.sum()), np.where(rng.random(noise.sum()) < 0.5, -3600.0, span + 3600)]
    )
    rows = np.concatenate([np.flatnonzero(converts), np.flatnonzero(noise)])
    table = pa.table(
        {
            "user_id": ids[rows],
            "item_id": np.full(len(rows), "i1"),
            "type": np.full(len(rows), "purchase"),
            "timestamp": pa.array(((START.timestamp() + offsets) * 1e6).astype(np.int64)).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "value": np.concatenate([spend[converts], np.full(noise.sum(), 500.0)]),
        }
    )
    return users, table, spend


def test_planted_lift_is_found_with_an_interval_covering_the_truth() -> None:
    users, table, spend = planted_experiment({"control": 0.04, "coupon": 0.06}, seed=7)
    result = campaign_readout(config(), users, table, as_of=AS_OF)
    lift = result.readout.lift("coupon", "conversion")
    assert lift.significant and lift.diff_ci[0] < 0.02 < lift.diff_ci[1]
    assert 0.03 < lift.control_value < 0.05 and 0.05 < lift.treatment_value < 0.07
    assert result.decision.startswith("Ship coupon: conversion +")
    assert not result.readout.sample_ratio.mismatch
    # Attribution recovers exactly what was planted, user by user.
    arm = users.column("variant").to_numpy()
    outcomes = by_name(attribute(config(), users, table, as_of=AS_OF))
    for name, outcome in outcomes.items():
        assert np.allclose(outcome.revenue, spend[arm == name])
        assert np.array_equal(outcome.converted, spend[arm == name] > 0)
    coupon = next(v for v in result.readout.variants if v.name == "coupon")
    assert coupon.cost == pytest.approx(0.05 * coupon.n + 2.0 * np.count_nonzero(spend[arm == "coupon"]))
    summary = json.loads(json.dumps(result.to_dict()))  # JSON-ready
    assert summary["treatments"] == {"control": "", "coupon": "10% coupon"} and summary["campaign"] == "spring"


def test_without_an_effect_the_readout_is_mostly_not_significant() -> None:
    calls = [
        campaign_readout(config(), *planted_experiment({"control": 0.05, "coupon": 0.05}, seed)[:2], as_of=AS_OF)
        for seed in range(20)
    ]
    significant = [r.readout.lift("coupon", "conversion").significant for r in calls]
    assert sum(significant) <= 3  # 1 expected at alpha = 0.05; P(>= 4 of 20) < 2%
    assert sum(r.decision.startswith("No detectable difference") for r in calls) >= 17


def test_revenue_and_ctr_decisions_and_the_sample_ratio_guard() -> None:
    users, table, _ = planted_experiment({"control": 0.04, "coupon": 0.06}, seed=3, n=4_000)
    revenue = campaign_readout(config(primary_metric="revenue_per_user"), users, table, as_of=AS_OF)
    assert "revenue per user" in revenue.decision
    single = campaign_readout(config(primary_metric="ctr"), users, table, as_of=AS_OF)
    assert single.decision.startswith("CTR needs two contacted treatments") and "on conversion:" in single.decision

    three = config(
        primary_metric="ctr",
        variants=[
            {"name": "control", "weight": 0.2, "is_control": True},
            {"name": "A", "weight": 0.4},
            {"name": "B", "weight": 0.4},
        ],
    )
    arms = {
        "control": [f"c{i}" for i in range(200)],
        "A": [f"a{i}" for i in range(400)],
        "B": [f"b{i}" for i in range(400)],
    }
    clickers = arms["A"][:40] + arms["B"][:100]
    clicks = events(*[(u, "i1", "click", START + timedelta(hours=1), "email") for u in clickers])
    ctr = campaign_readout(three, assignments(arms), clicks, as_of=AS_OF)
    assert ctr.decision.startswith("Best click-through: B 25.00% vs A 10.00% of contacted users clicked")

    skewed = assignments({"control": [f"c{i}" for i in range(600)], "coupon": [f"t{i}" for i in range(400)]})
    srm = campaign_readout(config(primary_metric="ctr"), skewed, clicks, as_of=AS_OF)
    assert srm.readout.sample_ratio.mismatch and srm.decision.startswith("Sample ratio mismatch")
    early = campaign_readout(three, assignments(arms), clicks, as_of=AS_OF, planned_users=2_000)
    assert early.decision.startswith("Too early: 1,000 of 2,000 planned users")
