"""Experiment read-out: metrics with hand-computed answers, statistics equal to statsmodels/scipy, trust checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from shopsense.errors import ConfigError
from shopsense.marketing.assignment import Variant
from shopsense.marketing.experiments import (
    VariantOutcomes,
    decision,
    mean_effect,
    minimum_detectable_effect,
    minimum_detectable_effect_mean,
    plot_lift,
    proportion_effect,
    read_out,
    sample_ratio_check,
    sample_size,
    sample_size_mean,
)

HALF = [Variant("A", 0.5, is_control=True), Variant("B", 0.5)]
Z_80 = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)


def counts_arm(name: str, n: int, conversions: int, seed: int = 0, exposed: int = 1) -> VariantOutcomes:
    """An arm with exactly ``conversions`` converters among ``n`` users and skewed revenue for converters."""
    rng = np.random.default_rng(seed)
    converted = np.zeros(n)
    converted[rng.choice(n, conversions, replace=False)] = 1
    orders = converted * rng.integers(1, 4, n)
    revenue = orders * rng.lognormal(3.0, 0.7, n)
    return VariantOutcomes(name, np.full(n, exposed), converted * rng.integers(0, 3, n), converted, orders, revenue)


def tiny() -> list[VariantOutcomes]:
    control = VariantOutcomes(
        "A",
        exposed=np.zeros(4),
        clicks=np.zeros(4),
        converted=np.array([1, 0, 0, 1]),
        orders=np.array([1, 0, 0, 2]),
        revenue=np.array([10.0, 0, 0, 30]),
    )
    treatment = VariantOutcomes(
        "B",
        exposed=np.array([True, True, True, True, False]),
        clicks=np.array([2, 1, 0, 1, 0]),
        converted=np.array([1, 1, 0, 1, 1]),  # the last converter was never contacted: no coupon cost
        orders=np.array([3, 1, 0, 1, 1]),
        revenue=np.array([60.0, 20, 0, 20, 10]),
        cost_per_contact=1.0,
        offer_cost=5.0,
    )
    return [control, treatment]


def test_per_arm_metrics_match_hand_computed_values() -> None:
    a, b = read_out(HALF, tiny()).variants
    assert (a.n, a.exposed, a.conversion_rate, a.revenue_per_user, a.repurchase_rate, a.cost) == (
        4,
        0,
        0.5,
        10,
        0.25,
        0,
    )
    assert a.average_order_value == pytest.approx(40 / 3)
    assert math.isnan(a.ctr) and math.isnan(a.roi) and math.isnan(a.incremental_revenue)
    assert (b.n, b.exposed, b.ctr, b.conversion_rate, b.revenue_per_user, b.repurchase_rate) == (5, 4, 1, 0.8, 22, 0.2)
    assert b.average_order_value == pytest.approx(110 / 6)
    assert b.cost == 4 * 1.0 + 3 * 5.0  # 4 contacts, 3 exposed converters
    assert b.incremental_revenue == pytest.approx((22 - 10) * 5)
    assert b.roi == pytest.approx((60 - 19) / 19)


def test_to_dict_is_strict_json_with_undefined_values_as_none() -> None:
    result = read_out(HALF, tiny()).to_dict()
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["variants"][0]["ctr"] is None
    assert result["lifts"][0]["diff_ci"] == list(read_out(HALF, tiny()).lift("B", "conversion").diff_ci)


def test_statistics_equal_statsmodels_and_scipy() -> None:
    control, treatment = counts_arm("A", 3000, 150, seed=1), counts_arm("B", 2800, 182, seed=2)
    readout = read_out(HALF, [control, treatment], planned_users=None)
    conv = readout.lift("B", "conversion")
    _, p = proportions_ztest([182, 150], [2800, 3000])
    assert conv.p_value == pytest.approx(p, rel=1e-9, abs=1e-12)
    assert conv.diff_ci == pytest.approx(
        confint_proportions_2indep(182, 2800, 150, 3000, method="newcomb", compare="diff"), rel=1e-9
    )
    rev = readout.lift("B", "revenue_per_user")
    welch = stats.ttest_ind(treatment.revenue, control.revenue, equal_var=False)
    assert rev.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    compare = CompareMeans(DescrStatsW(treatment.revenue), DescrStatsW(control.revenue))
    assert rev.diff_ci == pytest.approx(compare.tconfint_diff(alpha=0.05, usevar="unequal"), rel=1e-9)
    assert rev.diff_ci == pytest.approx(tuple(welch.confidence_interval(0.95)), rel=1e-9)


def test_relative_interval_is_the_delta_method() -> None:
    conv = read_out(HALF, [counts_arm("A", 3000, 150), counts_arm("B", 2800, 182)]).lift("B", "conversion")
    p_t, p_c = 182 / 2800, 150 / 3000
    se = math.sqrt(p_t * (1 - p_t) / 2800 / p_c**2 + p_t**2 * p_c * (1 - p_c) / 3000 / p_c**4)
    assert conv.relative == pytest.approx(p_t / p_c - 1, rel=1e-12)
    assert conv.relative_ci == pytest.approx(
        (p_t / p_c - 1 - 1.959963984540054 * se, p_t / p_c - 1 + 1.959963984540054 * se)
    )


def test_vectorised_statistics_equal_one_call_per_experiment() -> None:
    x_t, x_c, n = np.array([50, 61, 0, 77]), np.array([40, 61, 3, 50]), np.array([1000, 1200, 900, 1500])
    effect = proportion_effect(x_t, n, x_c, n + 100, alpha=0.1)
    for i in range(4):
        assert effect.p_value[i] == pytest.approx(proportions_ztest([x_t[i], x_c[i]], [n[i], n[i] + 100])[1], rel=1e-9)
        low, high = confint_proportions_2indep(x_t[i], n[i], x_c[i], n[i] + 100, method="newcomb", alpha=0.1)
        assert (effect.diff_low[i], effect.diff_high[i]) == pytest.approx((low, high), rel=1e-9)
    assert effect.significant.tolist() == [False, False, False, True]
    means = mean_effect([5.0, 5.5], [4.0, 9.0], [100, 80], [5.0, 4.0], [4.0, 1.0], [100, 120])
    expected = stats.ttest_ind_from_stats(5.5, 3.0, 80, 4.0, 1.0, 120, equal_var=False)
    assert means.p_value[1] == pytest.approx(expected.pvalue, rel=1e-9)
    assert means.diff.tolist() == [0.0, 1.5] and means.p_value[0] == 1.0


def test_sample_ratio_mismatch_fires_on_a_broken_split_only() -> None:
    assert sample_ratio_check({"A": 5000, "B": 4500}, HALF).mismatch
    assert not sample_ratio_check({"A": 5000, "B": 4990}, HALF).mismatch
    chi2 = (250**2 + 250**2) / 4750
    assert sample_ratio_check({"A": 5000, "B": 4500}, HALF).p_value == pytest.approx(stats.chi2.sf(chi2, 1))
    unequal = [Variant("hold", 0.1, is_control=True), Variant("mail", 0.9)]
    assert not sample_ratio_check({"hold": 1000, "mail": 9000}, unequal).mismatch
    readout = read_out(HALF, [counts_arm("A", 5000, 250), counts_arm("B", 4500, 400)])
    assert decision(readout).startswith("Sample ratio mismatch: do not trust this read-out")


def expected_sentence(x_t: int, x_c: int, n: int) -> str:
    low, high = confint_proportions_2indep(x_t, n, x_c, n, method="newcomb")
    p = proportions_ztest([x_t, x_c], [n, n])[1]
    p_text = "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"
    return f"conversion {100 * (x_t - x_c) / n:+.2f} pp (95% CI {100 * low:+.2f} to {100 * high:+.2f}), {p_text}"


def test_decision_ships_keeps_or_waits() -> None:
    ship = read_out(HALF, [counts_arm("A", 10_000, 500), counts_arm("B", 10_000, 600)])
    assert decision(ship) == f"Ship B: {expected_sentence(600, 500, 10_000)}."
    assert decision(ship) == "Ship B: conversion +1.00 pp (95% CI +0.37 to +1.63), p = 0.0019."
    flat = read_out(HALF, [counts_arm("A", 10_000, 500), counts_arm("B", 10_000, 510)])
    assert decision(flat) == f"No detectable difference: B {expected_sentence(510, 500, 10_000)}."
    worse = read_out(HALF, [counts_arm("A", 10_000, 600), counts_arm("B", 10_000, 500)])
    assert decision(worse) == f"Keep A: B {expected_sentence(500, 600, 10_000)}."
    early = read_out(HALF, [counts_arm("A", 10_000, 500), counts_arm("B", 10_000, 600)], planned_users=30_000)
    assert decision(early).startswith("Too early: 20,000 of 30,000 planned users")
    assert decision(ship, "revenue_per_user").startswith(("Ship B: revenue per user +", "No detectable difference"))
    with pytest.raises(ConfigError, match="unknown metric"):
        decision(ship, "clicks")


def test_decision_picks_the_best_significant_treatment() -> None:
    three = [Variant("A", 0.4, is_control=True), Variant("B", 0.3), Variant("C", 0.3)]
    arms = [counts_arm("A", 8000, 400), counts_arm("B", 6000, 390), counts_arm("C", 6000, 420)]
    assert decision(read_out(three, arms)).startswith("Ship C: conversion +2.00 pp")


def test_mde_and_sample_size_invert_each_other() -> None:
    for n in (150, 1234, 20_000, 1_000_000):
        for rate in (0.01, 0.05, 0.4):
            assert sample_size(rate, minimum_detectable_effect(n, rate)) == n
        assert sample_size_mean(25.0, minimum_detectable_effect_mean(n, 25.0)) == n


def test_power_agrees_with_the_closed_form() -> None:
    # n = 2 ((z_{1-alpha/2} + z_power) / h)^2; statsmodels adds the far tail, which moves n by < 1 user.
    h = proportion_effectsize(0.06, 0.05)
    assert abs(sample_size(0.05, 0.01) - 2 * (Z_80 / h) ** 2) < 1
    assert abs(sample_size_mean(30.0, 1.5) - 2 * (Z_80 * 30.0 / 1.5) ** 2) < 1
    assert sample_size(0.10, 0.02) == 3835  # 10% -> 12%: h = 0.0640, 2 * (2.8016 / 0.06398) ** 2 = 3834.6
    assert minimum_detectable_effect_mean(10_000, 30.0) == pytest.approx(Z_80 * 30.0 * math.sqrt(2 / 10_000), rel=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_size(0.0, 0.01), "baseline_rate must be a rate"),
        (lambda: sample_size(0.5, -0.1), "mde_abs must be > 0"),
        (lambda: sample_size(0.95, 0.1), "must stay below 1"),
        (lambda: minimum_detectable_effect(1, 0.05), "n_per_arm must be >= 2"),
        (lambda: minimum_detectable_effect(5, 0.9), "cannot detect any lift"),
        (lambda: sample_size_mean(0.0, 1.0), "std must be > 0"),
        (lambda: minimum_detectable_effect(1000, 0.05, power=1.0), "alpha and power"),
    ],
)
def test_power_refuses_bad_designs(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()  # type: ignore[operator]


def outcomes(**override: object) -> VariantOutcomes:
    fields: dict[str, object] = {
        "exposed": [1, 1, 0],
        "clicks": [0, 2, 0],
        "converted": [0, 1, 0],
        "orders": [0, 1, 0],
        "revenue": [0.0, 12.5, 0.0],
    }
    return VariantOutcomes("B", **(fields | override))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"clicks": [0, 2]}, "outcome arrays must be 1-D and equally long"),
        ({"revenue": [0.0, -5.0, 0.0]}, r"revenue\[1\] = -5; revenue must be a finite number >= 0"),
        ({"revenue": [0.0, float("nan"), 0.0]}, r"revenue\[1\] = nan"),
        ({"converted": [0, 2, 0]}, r"converted\[1\] = 2; converted must be 0 or 1"),
        ({"orders": [0, 1.5, 0]}, r"orders\[1\] = 1.5; orders must be a whole number >= 0"),
        ({"clicks": ["a", "b", "c"]}, "clicks must be numeric"),
        ({k: [] for k in ("exposed", "clicks", "converted", "orders", "revenue")}, "'B' has no users"),
        ({"offer_cost": -1.0}, "offer_cost must be a finite number >= 0"),
    ],
)
def test_invalid_outcomes_are_refused_with_the_place(override: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        outcomes(**override)


def test_read_out_refuses_configs_that_do_not_fit() -> None:
    no_control = [Variant("A", 0.5), Variant("B", 0.5)]
    with pytest.raises(ConfigError, match="exactly one variant must be the control"):
        read_out(no_control, tiny())
    with pytest.raises(ConfigError, match="must match the variants"):
        read_out(HALF, tiny()[:1])
    with pytest.raises(ConfigError, match="must match the variants"):
        read_out(HALF, [tiny()[0], tiny()[0]])
    with pytest.raises(ConfigError, match="alpha"):
        read_out(HALF, tiny(), alpha=5)
    with pytest.raises(ConfigError, match="no lift for treatment 'Z'"):
        read_out(HALF, tiny()).lift("Z", "conversion")


def test_plot_lift_writes_a_png(tmp_path: Path) -> None:
    readout = read_out(HALF, [counts_arm("A", 2000, 100), counts_arm("B", 2000, 130)])
    path = plot_lift(readout, tmp_path / "plots" / "lift.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
