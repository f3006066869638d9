"""Read-out of a finished A/B experiment: per-arm metrics, lift versus the hold-out, trust checks, power.

Every arm is analysed by intention to treat: the denominator is users *assigned*, not users contacted,
because who ends up contacted (deliverable address, opened app) can differ between arms and would
break the randomisation. The statistics come from the reference libraries and are vectorised over
many experiments, so ``simulation.py`` checks the very functions a read-out uses:

- conversion: pooled two-proportion z-test (the statistic of statsmodels ``proportions_ztest``) and
  the Newcombe hybrid-score interval for the difference (statsmodels ``confint_proportions_2indep``),
  which keeps its coverage at low rates where the Wald interval does not;
- revenue per user: Welch's t-test (scipy ``ttest_ind_from_stats(equal_var=False)``, identical to
  ``ttest_ind`` on the raw values) and its Welch-Satterthwaite interval;
- relative lift: the first-order delta method for ``mean_t / mean_c - 1`` with independent arms, a
  symmetric normal interval (Fieller is exact but can be unbounded; at campaign sizes they agree).

A read-out is trusted only when the sample-ratio check passes: a chi-square goodness of fit of the
assigned counts against the configured weights, flagged at p < 0.001, since a broken split means
assignment or logging is biased and no lift from it can be believed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize

from shopsense.errors import ConfigError
from shopsense.marketing.assignment import Variant, validate_variants

SRM_P_VALUE = 1e-3
METRICS = ("conversion", "revenue_per_user")
_OUTCOME_ARRAYS = ("exposed", "clicks", "converted", "orders", "revenue")


@dataclass(frozen=True)
class VariantOutcomes:
    """What the users assigned to one arm did, one array element per assigned user.

    Args:
        name: the arm, as in its ``Variant``.
        exposed: 1 if the user was actually contacted (the hold-out is all 0).
        clicks: clicks on the campaign.
        converted: 1 if the user bought during the measurement window.
        orders: orders in the window (>= 2 counts as a repurchase).
        revenue: revenue in the window, >= 0.
        cost_per_contact: cost of one contact (message, postage).
        offer_cost: cost of the offer per exposed converter (e.g. the coupon value), since only
            contacted users can redeem it.
    """

    name: str
    exposed: np.ndarray
    clicks: np.ndarray
    converted: np.ndarray
    orders: np.ndarray
    revenue: np.ndarray
    cost_per_contact: float = 0.0
    offer_cost: float = 0.0

    def __post_init__(self) -> None:
        arrays = {key: np.asarray(getattr(self, key)) for key in _OUTCOME_ARRAYS}
        lengths = {key: values.shape for key, values in arrays.items()}
        if len(set(lengths.values())) != 1 or any(len(shape) != 1 for shape in lengths.values()):
            raise ConfigError(f"variant {self.name!r}: outcome arrays must be 1-D and equally long, got {lengths}")
        if not len(arrays["revenue"]):
            raise ConfigError(f"variant {self.name!r} has no users; every arm needs assigned users to be read out")
        for key, values in arrays.items():
            if not np.issubdtype(values.dtype, np.number) and values.dtype != bool:
                raise ConfigError(f"variant {self.name!r}: {key} must be numeric, got dtype {values.dtype}")
            object.__setattr__(self, key, values.astype(np.float64))
        self._require("exposed", np.isin(self.exposed, (0, 1)), "must be 0 or 1")
        self._require("converted", np.isin(self.converted, (0, 1)), "must be 0 or 1")
        for key in ("clicks", "orders"):
            values = getattr(self, key)
            self._require(key, (values >= 0) & (values == np.round(values)), "must be a whole number >= 0")
        self._require("revenue", np.isfinite(self.revenue) & (self.revenue >= 0), "must be a finite number >= 0")
        for key in ("cost_per_contact", "offer_cost"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ConfigError(f"variant {self.name!r}: {key} must be a finite number >= 0")

    def _require(self, key: str, ok: np.ndarray, rule: str) -> None:
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise ConfigError(f"variant {self.name!r}: {key}[{row}] = {getattr(self, key)[row]:g}; {key} {rule}")


@dataclass(frozen=True)
class Effect:
    """Treatment minus control for one metric, as arrays so one call tests many experiments.

    ``significant`` is the fixed-horizon rule: p < alpha and the (1 - alpha) interval excludes 0.
    """

    control: np.ndarray
    treatment: np.ndarray
    diff: np.ndarray
    diff_low: np.ndarray
    diff_high: np.ndarray
    relative: np.ndarray
    relative_low: np.ndarray
    relative_high: np.ndarray
    p_value: np.ndarray
    alpha: float
    significant: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        excludes_zero = (self.diff_low > 0) | (self.diff_high < 0)
        object.__setattr__(self, "significant", (self.p_value < self.alpha) & excludes_zero)


def proportion_effect(
    x_t: npt.ArrayLike, n_t: npt.ArrayLike, x_c: npt.ArrayLike, n_c: npt.ArrayLike, alpha: float = 0.05
) -> Effect:
    """Conversion-rate difference: pooled z-test p-value and Newcombe interval (see module docstring)."""
    x_t, n_t, x_c, n_c = (np.asarray(a, dtype=np.float64) for a in (x_t, n_t, x_c, n_c))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_t, p_c = x_t / n_t, x_c / n_c
        pooled = (x_t + x_c) / (n_t + n_c)
        z = (p_t - p_c) / np.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
        low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="newcomb", compare="diff", alpha=alpha)
    return _effect(
        p_c, p_t, low, high, p_t * (1 - p_t) / n_t, p_c * (1 - p_c) / n_c, 2 * stats.norm.sf(np.abs(z)), alpha
    )


def mean_effect(
    mean_t: npt.ArrayLike,
    var_t: npt.ArrayLike,
    n_t: npt.ArrayLike,
    mean_c: npt.ArrayLike,
    var_c: npt.ArrayLike,
    n_c: npt.ArrayLike,
    alpha: float = 0.05,
) -> Effect:
    """Difference of means (revenue per user) by Welch's t-test, from per-arm mean, variance (ddof=1) and n."""
    mean_t, var_t, n_t, mean_c, var_c, n_c = (
        np.asarray(a, dtype=np.float64) for a in (mean_t, var_t, n_t, mean_c, var_c, n_c)
    )
    sq_t, sq_c = var_t / n_t, var_c / n_c
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = stats.ttest_ind_from_stats(
            mean_t, np.sqrt(var_t), n_t, mean_c, np.sqrt(var_c), n_c, equal_var=False
        ).pvalue
        dof = (sq_t + sq_c) ** 2 / (sq_t**2 / (n_t - 1) + sq_c**2 / (n_c - 1))
        half = stats.t.ppf(1 - alpha / 2, dof) * np.sqrt(sq_t + sq_c)
    diff = mean_t - mean_c
    return _effect(mean_c, mean_t, diff - half, diff + half, sq_t, sq_c, np.asarray(p_value), alpha)


def _effect(
    control: np.ndarray,
    treatment: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    sq_se_t: np.ndarray,
    sq_se_c: np.ndarray,
    p_value: np.ndarray,
    alpha: float,
) -> Effect:
    """Add the delta-method relative lift to an absolute difference and its interval."""
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = treatment / control - 1
        se = np.sqrt(sq_se_t / control**2 + treatment**2 * sq_se_c / control**4)
    half = stats.norm.ppf(1 - alpha / 2) * se
    return Effect(
        control, treatment, treatment - control, low, high, relative, relative - half, relative + half, p_value, alpha
    )


@dataclass(frozen=True)
class VariantSummary:
    """The per-arm numbers of a read-out; rates are shares (0.031 = 3.1%), money in the data's currency."""

    name: str
    is_control: bool
    n: int
    exposed: int
    ctr: float
    conversion_rate: float
    revenue_per_user: float
    average_order_value: float
    repurchase_rate: float
    cost: float
    incremental_revenue: float
    roi: float


@dataclass(frozen=True)
class Lift:
    """One treatment versus the control on one metric, with (1 - alpha) intervals."""

    treatment: str
    metric: str
    control_value: float
    treatment_value: float
    diff: float
    diff_ci: tuple[float, float]
    relative: float
    relative_ci: tuple[float, float]
    p_value: float
    significant: bool


@dataclass(frozen=True)
class SampleRatioCheck:
    """Assigned counts against the configured split; ``mismatch`` when p < ``SRM_P_VALUE``."""

    observed: dict[str, int]
    expected: dict[str, float]
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class Readout:
    """Everything known about a finished experiment; ``planned_users`` is the fixed-horizon total."""

    control: str
    alpha: float
    variants: tuple[VariantSummary, ...]
    lifts: tuple[Lift, ...]
    sample_ratio: SampleRatioCheck
    planned_users: int | None = None

    def lift(self, treatment: str, metric: str) -> Lift:
        """The comparison of ``treatment`` with the control on ``metric`` (one of ``METRICS``)."""
        for lift in self.lifts:
            if (lift.treatment, lift.metric) == (treatment, metric):
                return lift
        raise ConfigError(f"no lift for treatment {treatment!r} and metric {metric!r}; metrics are {METRICS}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: tuples become lists, NaN and infinity (undefined ratios) become None."""
        return dict(_jsonable(asdict(self)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def sample_ratio_check(observed: dict[str, int], variants: Sequence[Variant]) -> SampleRatioCheck:
    """Chi-square goodness of fit of assigned counts (by variant name) against the variants' weights."""
    validate_variants(variants)
    if sorted(observed) != sorted(v.name for v in variants) or any(c < 0 for c in observed.values()):
        raise ConfigError(f"counts {observed} must be >= 0 and name exactly the variants {[v.name for v in variants]}")
    counts = np.array([observed[v.name] for v in variants], dtype=np.float64)
    expected = np.array([v.weight for v in variants]) * counts.sum()
    p_value = float(stats.chisquare(counts, expected).pvalue)
    return SampleRatioCheck(
        observed={v.name: int(c) for v, c in zip(variants, counts, strict=True)},
        expected={v.name: float(e) for v, e in zip(variants, expected, strict=True)},
        p_value=p_value,
        mismatch=p_value < SRM_P_VALUE,
    )


def read_out(
    variants: Sequence[Variant],
    outcomes: Sequence[VariantOutcomes],
    *,
    alpha: float = 0.05,
    planned_users: int | None = None,
) -> Readout:
    """Per-arm metrics, every treatment against the control, and the sample-ratio check.

    Args:
        variants: the configured split (names, weights, which is the control).
        outcomes: one ``VariantOutcomes`` per variant, matched by name.
        alpha: two-sided significance level; intervals are (1 - alpha).
        planned_users: total users the design called for; ``decision`` waits until they are in.

    Raises:
        ConfigError: on an invalid split, outcomes that do not match the variants, or a bad alpha.
    """
    validate_variants(variants)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if planned_users is not None and planned_users < 1:
        raise ConfigError(f"planned_users must be >= 1 (or None), got {planned_users}")
    by_name = {o.name: o for o in outcomes}
    if sorted(by_name) != sorted(v.name for v in variants) or len(by_name) != len(outcomes):
        raise ConfigError(
            f"outcomes {[o.name for o in outcomes]} must match the variants {[v.name for v in variants]} one to one"
        )
    control = next(v.name for v in variants if v.is_control)
    base = by_name[control]
    summaries = tuple(_summarise(by_name[v.name], v.is_control, base) for v in variants)
    lifts = tuple(lift for v in variants if not v.is_control for lift in _compare(by_name[v.name], base, alpha))
    observed = {name: len(o.revenue) for name, o in by_name.items()}
    return Readout(control, alpha, summaries, lifts, sample_ratio_check(observed, variants), planned_users)


def _summarise(arm: VariantOutcomes, is_control: bool, base: VariantOutcomes) -> VariantSummary:
    n, exposed, orders = len(arm.revenue), int(arm.exposed.sum()), arm.orders.sum()
    cost = arm.cost_per_contact * exposed + arm.offer_cost * float((arm.converted * arm.exposed).sum())
    incremental = (arm.revenue.mean() - base.revenue.mean()) * n
    return VariantSummary(
        name=arm.name,
        is_control=is_control,
        n=n,
        exposed=exposed,
        ctr=float(arm.clicks.sum() / exposed) if exposed else math.nan,
        conversion_rate=float(arm.converted.mean()),
        revenue_per_user=float(arm.revenue.mean()),
        average_order_value=float(arm.revenue.sum() / orders) if orders else math.nan,
        repurchase_rate=float((arm.orders >= 2).mean()),
        cost=float(cost),
        incremental_revenue=math.nan if is_control else float(incremental),
        roi=float((incremental - cost) / cost) if cost and not is_control else math.nan,
    )


def _compare(arm: VariantOutcomes, base: VariantOutcomes, alpha: float) -> list[Lift]:
    n_t, n_c = len(arm.revenue), len(base.revenue)
    conversion = proportion_effect(arm.converted.sum(), n_t, base.converted.sum(), n_c, alpha)
    revenue = mean_effect(
        arm.revenue.mean(), _variance(arm.revenue), n_t, base.revenue.mean(), _variance(base.revenue), n_c, alpha
    )
    return [_lift(arm.name, metric, e) for metric, e in zip(METRICS, (conversion, revenue), strict=True)]


def _variance(values: np.ndarray) -> float:
    return float(values.var(ddof=1)) if len(values) > 1 else math.nan


def _lift(treatment: str, metric: str, e: Effect) -> Lift:
    return Lift(
        treatment=treatment,
        metric=metric,
        control_value=float(e.control),
        treatment_value=float(e.treatment),
        diff=float(e.diff),
        diff_ci=(float(e.diff_low), float(e.diff_high)),
        relative=float(e.relative),
        relative_ci=(float(e.relative_low), float(e.relative_high)),
        p_value=float(e.p_value),
        significant=bool(e.significant),
    )


def decision(readout: Readout, metric: str = "conversion") -> str:
    """A one-sentence verdict under the fixed-horizon rule, trust checks first.

    The order matters: a sample-ratio mismatch voids everything; before the planned sample size
    nothing is decided (peeking inflates false positives); then the best treatment that is
    significantly better is shipped, one significantly worse keeps the control.
    """
    if readout.sample_ratio.mismatch:
        return (
            f"Sample ratio mismatch: do not trust this read-out (assigned {readout.sample_ratio.observed}, "
            f"chi-square {_p(readout.sample_ratio.p_value)}); check assignment and logging."
        )
    users = sum(v.n for v in readout.variants)
    if readout.planned_users is not None and users < readout.planned_users:
        return (
            f"Too early: {users:,} of {readout.planned_users:,} planned users; "
            "a fixed-horizon test is decided only at its planned sample size."
        )
    lifts = [lift for lift in readout.lifts if lift.metric == metric]
    if not lifts:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {METRICS}")
    winners = sorted((lift for lift in lifts if lift.significant and lift.diff > 0), key=lambda lift: -lift.diff)
    if winners:
        return f"Ship {winners[0].treatment}: {_describe(winners[0], readout.alpha)}."
    verdicts = [lift for lift in lifts if lift.significant] or lifts  # significant here means significantly worse
    details = "; ".join(f"{lift.treatment} {_describe(lift, readout.alpha)}" for lift in verdicts)
    return f"Keep {readout.control}: {details}." if verdicts[0].significant else f"No detectable difference: {details}."


def _describe(lift: Lift, alpha: float) -> str:
    level = f"{1 - alpha:.0%}"
    if lift.metric == "conversion":
        diff, (low, high) = 100 * lift.diff, (100 * lift.diff_ci[0], 100 * lift.diff_ci[1])
        return f"conversion {diff:+.2f} pp ({level} CI {low:+.2f} to {high:+.2f}), {_p(lift.p_value)}"
    low, high = lift.diff_ci
    return f"revenue per user {lift.diff:+.2f} ({level} CI {low:+.2f} to {high:+.2f}), {_p(lift.p_value)}"


def _p(p_value: float) -> str:
    if math.isnan(p_value):
        return "p undefined"
    return "p < 0.0001" if p_value < 1e-4 else f"p = {p_value:.4f}"


def minimum_detectable_effect(n_per_arm: int, baseline_rate: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest absolute conversion lift a 50/50 test with ``n_per_arm`` users per arm detects with ``power``.

    Solved on Cohen's arcsine effect size h (statsmodels ``NormalIndPower``), whose variance does not
    depend on the rate, then mapped back to a rate: ``p1 = sin(asin(sqrt(p0)) + h / 2) ** 2``.
    """
    _check_design(alpha, power, baseline_rate=baseline_rate)
    angle = math.asin(math.sqrt(baseline_rate)) + _effect_size_for(n_per_arm, alpha, power) / 2
    if angle >= math.pi / 2:
        raise ConfigError(f"{n_per_arm} users per arm cannot detect any lift from a {baseline_rate:.2%} baseline")
    return math.sin(angle) ** 2 - baseline_rate


def sample_size(baseline_rate: float, mde_abs: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm for a 50/50 test to detect an absolute conversion lift of ``mde_abs`` with ``power``."""
    _check_design(alpha, power, baseline_rate=baseline_rate, mde_abs=mde_abs)
    if baseline_rate + mde_abs >= 1:
        raise ConfigError(f"baseline_rate + mde_abs must stay below 1, got {baseline_rate + mde_abs}")
    return _n_for(proportion_effectsize(baseline_rate + mde_abs, baseline_rate), alpha, power)


def minimum_detectable_effect_mean(n_per_arm: int, std: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference of means (e.g. revenue per user) detectable with ``n_per_arm`` users per arm.

    ``std`` is the per-user standard deviation, e.g. from last period's revenue. Normal power (as for
    rates) on Cohen's d = difference / std: with the thousands of users per arm a campaign has, the
    Welch t and the z test need the same n to within one user.
    """
    _check_design(alpha, power, std=std)
    return std * _effect_size_for(n_per_arm, alpha, power)


def sample_size_mean(std: float, mde_abs: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm to detect a difference of means ``mde_abs`` given the per-user standard deviation."""
    _check_design(alpha, power, std=std, mde_abs=mde_abs)
    return _n_for(mde_abs / std, alpha, power)


def _effect_size_for(n_per_arm: int, alpha: float, power: float) -> float:
    """Root of statsmodels' power curve; its ``solve_power`` stops ~1e-4 off the target power, enough to
    break the n -> MDE -> n round trip, so brentq is run on ``NormalIndPower.power`` to full precision."""
    if n_per_arm < 2:
        raise ConfigError(f"n_per_arm must be >= 2, got {n_per_arm}")
    curve = NormalIndPower().power
    return float(optimize.brentq(lambda es: curve(es, n_per_arm, alpha, ratio=1.0) - power, 1e-12, 100.0))


def _n_for(effect_size: float, alpha: float, power: float) -> int:
    curve = NormalIndPower().power
    n = float(optimize.brentq(lambda n: curve(effect_size, n, alpha, ratio=1.0) - power, 1.0, 1e15))
    return math.ceil(n * (1 - 1e-9))  # 100.0000000001 from root-finding noise is 100 users, not 101


def _check_design(alpha: float, power: float, **positive: float) -> None:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ConfigError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0) or (name == "baseline_rate" and value >= 1):
            raise ConfigError(f"{name} must be {'a rate in (0, 1)' if name == 'baseline_rate' else '> 0'}, got {value}")


def plot_lift(readout: Readout, path: Path) -> Path:
    """PNG of each treatment's relative lift with its interval, one panel per metric; zero line = no effect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    treatments = [v.name for v in readout.variants if not v.is_control]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(10, 1.6 + 0.45 * len(treatments)), squeeze=False)
    for ax, metric in zip(axes[0], METRICS, strict=True):
        lifts = [readout.lift(name, metric) for name in treatments]
        centre = np.array([100 * lift.relative for lift in lifts])
        low = centre - np.array([100 * lift.relative_ci[0] for lift in lifts])
        high = np.array([100 * lift.relative_ci[1] for lift in lifts]) - centre
        colours = ["#2b7bba" if lift.significant else "#999999" for lift in lifts]
        ax.barh(treatments, np.nan_to_num(centre), xerr=[np.nan_to_num(low), np.nan_to_num(high)], color=colours)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(metric.replace("_", " "), fontsize=10)
        ax.set_xlabel(f"relative lift vs {readout.control}, % ({1 - readout.alpha:.0%} CI); blue = significant")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
