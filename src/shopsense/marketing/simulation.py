"""Simulated A/B tests with a known true effect, to check that the read-out's intervals and tests keep their word.

A 95% interval must contain the true difference in 95% of experiments, and a test at alpha = 0.05 must
fire in 5% of experiments with no effect; the only way to know is to run many experiments whose truth
is known. They go through the same vectorised functions ``read_out`` uses (``proportion_effect`` and
``mean_effect``), fed with the sufficient statistics each experiment would produce, so 1,000
experiments of 100,000 users per arm take about a second.

Data model per arm: each user converts with the arm's rate (binomial counts), and each converter spends
a lognormal amount with mean ``order_value_mean``, so revenue per user is zero-inflated and heavily
skewed like real shop revenue; the true difference in revenue per user is
``true_lift_abs * order_value_mean``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shopsense.errors import ConfigError
from shopsense.marketing.experiments import Effect, mean_effect, proportion_effect

_DRAWS_PER_BLOCK = 2_000_000  # bounds memory of the revenue draws whatever the experiment size


@dataclass(frozen=True)
class Coverage:
    """How one metric's read-out behaved over the simulated experiments.

    ``rejection_rate`` is the false-positive rate when ``true_diff`` is 0 and the power otherwise;
    ``coverage_se`` is the binomial standard error of ``coverage`` for judging the distance to 1 - alpha.
    """

    metric: str
    true_diff: float
    mean_estimate: float
    coverage: float
    coverage_se: float
    relative_coverage: float
    rejection_rate: float


@dataclass(frozen=True)
class SimulationResult:
    """The design that was simulated and what the read-out did on it."""

    n_experiments: int
    n_per_arm: int
    baseline_rate: float
    true_lift_abs: float
    alpha: float
    seed: int
    conversion: Coverage
    revenue_per_user: Coverage

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def simulate_experiments(
    n_experiments: int,
    n_per_arm: int,
    baseline_rate: float,
    true_lift_abs: float,
    seed: int,
    *,
    alpha: float = 0.05,
    order_value_mean: float = 50.0,
    order_value_sigma: float = 1.0,
) -> SimulationResult:
    """Run ``n_experiments`` 50/50 tests whose treatment converts ``true_lift_abs`` more, and score the read-out.

    Args:
        n_experiments: independent experiments to simulate.
        n_per_arm: users in each of control and treatment.
        baseline_rate: control conversion rate.
        true_lift_abs: treatment rate minus control rate (0 measures the false-positive rate).
        seed: seeds numpy's generator; same seed, same result.
        alpha: significance level of the tests; intervals are (1 - alpha).
        order_value_mean: mean spend of a converter.
        order_value_sigma: log-scale standard deviation of spend (1.0 is a long right tail).

    Raises:
        ConfigError: on sizes < 1 (< 2 users per arm), rates outside [0, 1], or a bad alpha or spend model.
    """
    _validate(n_experiments, n_per_arm, baseline_rate, true_lift_abs, alpha, order_value_mean, order_value_sigma)
    rng = np.random.default_rng(seed)
    rates = (baseline_rate, baseline_rate + true_lift_abs)
    control, treatment = (rng.binomial(n_per_arm, rate, size=n_experiments) for rate in rates)
    conversion = proportion_effect(treatment, n_per_arm, control, n_per_arm, alpha)
    mu = math.log(order_value_mean) - order_value_sigma**2 / 2  # lognormal mean = exp(mu + sigma^2 / 2)
    (mean_c, var_c), (mean_t, var_t) = (
        _revenue_moments(rng, converters, n_per_arm, mu, order_value_sigma) for converters in (control, treatment)
    )
    revenue = mean_effect(mean_t, var_t, n_per_arm, mean_c, var_c, n_per_arm, alpha)
    return SimulationResult(
        n_experiments=n_experiments,
        n_per_arm=n_per_arm,
        baseline_rate=baseline_rate,
        true_lift_abs=true_lift_abs,
        alpha=alpha,
        seed=seed,
        conversion=_score("conversion", conversion, true_lift_abs, true_lift_abs / baseline_rate),
        revenue_per_user=_score(
            "revenue_per_user", revenue, true_lift_abs * order_value_mean, true_lift_abs / baseline_rate
        ),
    )


def _revenue_moments(
    rng: np.random.Generator, converters: np.ndarray, n_per_arm: int, mu: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (ddof=1) of revenue per user in each experiment, drawing only the converters' spend.

    Non-converters add zeros, so the sum and sum of squares of the converters' spend are sufficient;
    experiments are processed in blocks so the draws never exceed ``_DRAWS_PER_BLOCK`` at once.
    """
    total, squares = np.zeros(len(converters)), np.zeros(len(converters))
    block_of = np.cumsum(converters) // _DRAWS_PER_BLOCK
    for block in np.unique(block_of):
        rows = np.flatnonzero(block_of == block)
        spend = rng.lognormal(mu, sigma, size=int(converters[rows].sum()))
        owner = np.repeat(np.arange(len(rows)), converters[rows])
        total[rows] = np.bincount(owner, weights=spend, minlength=len(rows))
        squares[rows] = np.bincount(owner, weights=spend**2, minlength=len(rows))
    mean = total / n_per_arm
    return mean, (squares - total * mean) / (n_per_arm - 1)


def _score(metric: str, effect: Effect, true_diff: float, true_relative: float) -> Coverage:
    covered = (effect.diff_low <= true_diff) & (true_diff <= effect.diff_high)
    coverage = float(covered.mean())
    return Coverage(
        metric=metric,
        true_diff=true_diff,
        mean_estimate=float(np.mean(effect.diff)),
        coverage=coverage,
        coverage_se=math.sqrt(coverage * (1 - coverage) / len(covered)),
        relative_coverage=float(
            ((effect.relative_low <= true_relative) & (true_relative <= effect.relative_high)).mean()
        ),
        rejection_rate=float(effect.significant.mean()),
    )


def _validate(
    n_experiments: int,
    n_per_arm: int,
    baseline_rate: float,
    true_lift_abs: float,
    alpha: float,
    order_value_mean: float,
    order_value_sigma: float,
) -> None:
    problems = [
        (n_experiments >= 1, f"n_experiments must be >= 1, got {n_experiments}"),
        (n_per_arm >= 2, f"n_per_arm must be >= 2, got {n_per_arm}"),
        (0 < baseline_rate < 1, f"baseline_rate must be in (0, 1), got {baseline_rate}"),
        (
            0 <= baseline_rate + true_lift_abs <= 1,
            f"baseline_rate + true_lift_abs must be a rate in [0, 1], got {baseline_rate + true_lift_abs}",
        ),
        (0 < alpha < 1, f"alpha must be in (0, 1), got {alpha}"),
        (order_value_mean > 0, f"order_value_mean must be > 0, got {order_value_mean}"),
        (order_value_sigma >= 0, f"order_value_sigma must be >= 0, got {order_value_sigma}"),
    ]
    failed = [message for ok, message in problems if not ok]
    if failed:
        raise ConfigError("; ".join(failed))
