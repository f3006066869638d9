"""Simulated experiments: the read-out's 95% intervals cover the truth 95% of the time and tests hold their alpha."""

from __future__ import annotations

import json

import pytest

from shopsense.errors import ConfigError
from shopsense.marketing import simulation
from shopsense.marketing.experiments import minimum_detectable_effect, sample_size
from shopsense.marketing.simulation import simulate_experiments


def test_no_effect_gives_nominal_coverage_and_false_positive_rate() -> None:
    result = simulate_experiments(400, 5000, 0.05, 0.0, seed=7)
    for metric in (result.conversion, result.revenue_per_user):
        assert metric.true_diff == 0.0
        assert 0.92 <= metric.coverage <= 0.98, metric
        assert 0.92 <= metric.relative_coverage <= 0.98, metric
        assert 0.025 <= metric.rejection_rate <= 0.08, metric


def test_real_effect_is_covered_and_found_with_the_planned_power() -> None:
    # At the sample size planned for a 1 pp lift with 80% power, the simulated power must be about 80%.
    n = sample_size(0.05, 0.01)
    result = simulate_experiments(400, n, 0.05, 0.01, seed=11)
    assert 0.92 <= result.conversion.coverage <= 0.98
    assert 0.74 <= result.conversion.rejection_rate <= 0.86
    assert result.conversion.mean_estimate == pytest.approx(0.01, abs=7e-4)  # 4 standard errors of the mean
    assert result.revenue_per_user.true_diff == pytest.approx(0.01 * 50.0)
    assert 0.92 <= result.revenue_per_user.coverage <= 0.98
    assert result.revenue_per_user.mean_estimate == pytest.approx(0.5, abs=0.06)


def test_half_the_mde_has_the_predicted_lower_power() -> None:
    mde = minimum_detectable_effect(3000, 0.1)
    power = simulate_experiments(400, 3000, 0.1, mde / 2, seed=3).conversion.rejection_rate
    assert 0.2 <= power <= 0.38  # normal theory: Phi(2.80 / 2 - 1.96) = 0.29


def test_same_seed_same_result_other_seed_other_result() -> None:
    first = simulate_experiments(50, 2000, 0.1, 0.01, seed=5).to_dict()
    assert first == simulate_experiments(50, 2000, 0.1, 0.01, seed=5).to_dict()
    assert first != simulate_experiments(50, 2000, 0.1, 0.01, seed=6).to_dict()
    assert json.loads(json.dumps(first))["conversion"]["metric"] == "conversion"


def test_revenue_drawn_in_blocks_equals_revenue_drawn_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    at_once = simulate_experiments(60, 4000, 0.05, 0.01, seed=2)
    monkeypatch.setattr(simulation, "_DRAWS_PER_BLOCK", 500)
    in_blocks = simulate_experiments(60, 4000, 0.05, 0.01, seed=2)
    assert in_blocks == at_once  # the generator's stream does not depend on how the draws are cut


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_experiments": 0}, "n_experiments must be >= 1"),
        ({"n_per_arm": 1}, "n_per_arm must be >= 2"),
        ({"baseline_rate": 1.0}, "baseline_rate must be in"),
        ({"true_lift_abs": -0.2}, "baseline_rate \\+ true_lift_abs must be a rate"),
        ({"alpha": 0.0}, "alpha must be in"),
    ],
)
def test_bad_designs_are_refused(kwargs: dict[str, float], message: str) -> None:
    args = {"n_experiments": 10, "n_per_arm": 100, "baseline_rate": 0.1, "true_lift_abs": 0.0, "seed": 0} | kwargs
    with pytest.raises(ConfigError, match=message):
        simulate_experiments(**args)  # type: ignore[arg-type]
