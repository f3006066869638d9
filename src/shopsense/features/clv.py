"""Customer lifetime value: BG/NBD for how often a customer will buy, Gamma-Gamma for how much.

Both models (``lifetimes``) read one summary per customer at a cut-off time: repeat purchase days
(``frequency``), days from the first to the last purchase day (``recency``), days from the first
purchase day to the cut-off (``T``) and the mean net value of the repeat days. A day, not an
order, is the unit of a purchase, as in the models' papers: two baskets on one afternoon are one
visit. Returns are netted against the purchase day they most likely refund (the customer's latest
purchase day at or before the return), so a refunded basket does not count as spend.

:func:`validate_clv` judges the models honestly: fitted on a calibration period, they forecast a
holdout window that they never saw, beside a naive forecast that repeats each customer's own
historical rate; a model that cannot beat that baseline should not be trusted with budgets.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import ConvergenceError
from pydantic import BaseModel, ConfigDict, Field

from shopsense.errors import ConfigError, ShopsenseError

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ClvFitError(ShopsenseError):
    """BG/NBD or Gamma-Gamma could not be fitted to the purchase history given."""


class ClvConfig(BaseModel):
    """How lifetime value is fitted and over which horizon it is forecast."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_days: float = Field(90.0, gt=0, description="forecast window: expected purchases and CLV over it")
    penalizer: float = Field(
        0.0,
        ge=0,
        description="lifetimes' L2 penalty on the parameters; it shrinks all four BG/NBD parameters towards 0, "
        "which biases b (on Online Retail 0.001 takes b from 3.4 to 1.3), so it is off unless a fit fails",
    )
    fallback_penalizer: float = Field(
        0.001,
        ge=0,
        description="tried once when a fit with `penalizer` does not converge (a short history often does not); "
        "the slight bias is the price of a forecast at all, and the log says it was used; 0: no retry",
    )
    min_repeat_customers: int = Field(
        20, ge=2, description="fewer repeat purchasers with positive spend: too little history to fit"
    )


@dataclass(frozen=True)
class PurchaseSummary:
    """One row per purchaser (sorted by ``user_id``) at a cut-off, in the units both models read (days).

    ``repeat_value`` is the mean net value of the repeat purchase days (0 without repeats), the
    Gamma-Gamma input; ``net_value`` is the net value of all purchase days.
    """

    user_ids: np.ndarray
    days: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    repeat_value: np.ndarray
    net_value: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def frequency(self) -> np.ndarray:
        """Repeat purchase days: the first purchase only starts the clock."""
        repeats: np.ndarray = (self.days - 1).astype(float)
        return repeats


@dataclass(frozen=True)
class ClvPrediction:
    """Forecast per customer of a summary, aligned with its rows."""

    p_alive: np.ndarray
    expected_purchases: np.ndarray
    expected_avg_value: np.ndarray

    @property
    def clv(self) -> np.ndarray:
        """Expected net spend over the horizon (undiscounted: a few months' discounting is below the noise)."""
        spend: np.ndarray = self.expected_purchases * self.expected_avg_value
        return spend


def as_of_micros(as_of: datetime) -> int:
    """Microseconds since the epoch of a time-zone-aware cut-off (naive times are ambiguous: refused)."""
    if not isinstance(as_of, datetime) or as_of.utcoffset() is None:
        raise ConfigError(f"as_of must be a time-zone-aware datetime (e.g. 2024-01-01T00:00+00:00); got {as_of!r}")
    return (as_of - _EPOCH) // timedelta(microseconds=1)


def event_micros(events: pa.Table) -> np.ndarray:
    """Event times as int64 microseconds since the epoch, after checking the columns every profile needs."""
    missing = [c for c in ("user_id", "type", "timestamp", "value") if c not in events.column_names]
    if missing:
        raise ConfigError(f"events: missing column(s) {missing}; pass the table scan_events() returns")
    kind = events.schema.field("timestamp").type
    if not pa.types.is_timestamp(kind) or kind.tz is None:
        raise ConfigError(f"events.timestamp is {kind}; it must be a time-zone-aware timestamp (UTC)")
    if events.column("timestamp").null_count or events.column("user_id").null_count:
        raise ConfigError("events: timestamp and user_id must not be null")
    utc = pc.cast(events.column("timestamp"), pa.timestamp("us", tz="UTC"), safe=False)
    return np.asarray(pc.cast(utc, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def history_before(events: pa.Table, as_of: datetime) -> pa.Table:
    """The events strictly before ``as_of``: the only history a feature computed at ``as_of`` may read."""
    end = as_of_micros(as_of)
    micros = event_micros(events)
    if events.num_rows == 0:
        raise ConfigError("events: the table is empty; there is no history to profile")
    if end <= micros.min():
        first = _EPOCH + timedelta(microseconds=int(micros.min()))
        raise ConfigError(
            f"as_of {as_of.isoformat()} is at or before the first event ({first.isoformat()}): no history before it"
        )
    return events.filter(pa.array(micros < end))


def user_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct user ids and each row's position among them (dictionary-encoded, no Python loop)."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    order = np.asarray(pc.sort_indices(encoded.dictionary).to_numpy(), dtype=np.int64)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    names = encoded.dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False).astype(str)
    return names, rank[np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)]


def locate(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each of ``ids`` in ``sorted_ids`` and whether it is there at all."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return at, sorted_ids[at] == ids


def take(values: np.ndarray, at: np.ndarray, found: np.ndarray, missing: float) -> np.ndarray:
    """``values[at]`` where ``found``, ``missing`` elsewhere (float)."""
    out = np.full(len(at), missing, dtype=float)
    out[found] = values[at[found]]
    return out


def type_flags(events: pa.Table, types: tuple[str, ...]) -> np.ndarray:
    """True for events whose type is one of ``types``."""
    hit = pc.is_in(pc.cast(events.column("type"), pa.string()), value_set=pa.array(list(types), pa.string()))
    return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)


def purchase_summary(
    events: pa.Table,
    as_of: datetime,
    purchase_types: tuple[str, ...] = ("purchase",),
    return_types: tuple[str, ...] = ("return",),
) -> PurchaseSummary:
    """Summarise every purchaser's history before ``as_of`` for BG/NBD and Gamma-Gamma.

    Args:
        events: events as ``scan_events()`` returns them; those at or after ``as_of`` are ignored.
        as_of: the cut-off (time-zone aware); ``T`` is measured up to it.
        purchase_types, return_types: event types that are purchases and returns (value = money).
    """
    history = history_before(events, as_of)
    end = as_of_micros(as_of)
    day = event_micros(history) // DAY_US
    names, codes = user_codes(history.column("user_id"))
    value = np.asarray(
        pc.fill_null(pc.cast(history.column("value"), pa.float64()), 0.0).to_numpy(zero_copy_only=False), dtype=float
    )
    bought, returned = type_flags(history, purchase_types), type_flags(history, return_types)
    base, span = int(day.min()), int(day.max() - day.min()) + 1
    day_keys, inverse = np.unique(codes[bought] * span + (day[bought] - base), return_inverse=True)
    day_value = np.bincount(inverse, weights=value[bought], minlength=len(day_keys))
    return_keys = codes[returned] * span + (day[returned] - base)
    at = np.searchsorted(day_keys, return_keys, side="right") - 1
    own = at >= 0
    own[own] = day_keys[at[own]] // span == codes[returned][own]  # the latest purchase day is the same user's
    day_value -= np.bincount(at[own], weights=value[returned][own], minlength=len(day_keys))
    owner, day_number = day_keys // span, day_keys % span + base
    buyers, first, days = np.unique(owner, return_index=True, return_counts=True)
    last = first + days - 1
    net = np.bincount(owner, weights=day_value, minlength=len(names))[buyers]
    repeats = days - 1
    return PurchaseSummary(
        user_ids=names[buyers],
        days=days.astype(np.int64),
        recency=(day_number[last] - day_number[first]).astype(float),
        T=(end - day_number[first] * DAY_US) / DAY_US,
        repeat_value=np.where(repeats > 0, (net - day_value[first]) / np.maximum(repeats, 1), 0.0),
        net_value=net,
    )


class ClvModel:
    """BG/NBD (purchase count, p_alive) and Gamma-Gamma (value per purchase) fitted on one summary."""

    def __init__(self, config: ClvConfig | None = None) -> None:
        self.config = config or ClvConfig()

    def fit(self, summary: PurchaseSummary) -> ClvModel:
        """Fit BG/NBD on every purchaser and Gamma-Gamma on repeat purchasers with positive spend."""
        cfg = self.config
        repeat = (summary.days > 1) & (summary.repeat_value > 0)
        if repeat.sum() < cfg.min_repeat_customers:
            raise ClvFitError(
                f"CLV needs at least {cfg.min_repeat_customers} repeat purchasers with positive spend to fit "
                f"(clv.min_repeat_customers); the history has {int(repeat.sum())} of {len(summary)} purchasers"
            )
        freq = summary.frequency
        self.purchases_ = self._fit(BetaGeoFitter, "BG/NBD", freq, summary.recency, summary.T)
        self.spend_ = self._fit(GammaGammaFitter, "Gamma-Gamma", freq[repeat], summary.repeat_value[repeat])
        if self.spend_.params_["q"] <= 1:
            raise ClvFitError(
                f"Gamma-Gamma fitted q = {self.spend_.params_['q']:.3g} <= 1: spend per purchase is so heavy-tailed "
                "that its mean is undefined; cap or leave out the few customers whose spend dominates"
            )
        if not np.isfinite(self.predict(summary).clv).all():
            fitted = ", ".join(f"{k}={v:.3g}" for k, v in self.params().items())
            raise ClvFitError(
                f"BG/NBD fitted {fitted}: with a + b < 1 the history shows almost no dropout yet, and the "
                "forecast of one-time buyers is undefined there; a longer history gives a usable fit"
            )
        return self

    def _fit(self, model: Any, name: str, *columns: np.ndarray) -> Any:
        """Fit one lifetimes model, once more with ``fallback_penalizer`` if it fails, turning what still
        fails (and lifetimes' printed diagnostics) into one clear error."""
        cfg = self.config
        tries = [cfg.penalizer] + ([cfg.fallback_penalizer] if cfg.fallback_penalizer > cfg.penalizer else [])
        failure = ""
        for penalizer in tries:
            fitter = model(penalizer_coef=penalizer)
            try:
                with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
                    fitter.fit(*columns)
            except (ConvergenceError, ValueError, np.linalg.LinAlgError) as exc:
                failure = str(exc).strip()
                continue
            if not np.isfinite(fitter.params_.to_numpy()).all():
                failure = "non-finite parameters"
                continue
            if penalizer != cfg.penalizer:
                log.warning("%s did not converge with penalizer %g; fitted with %g", name, cfg.penalizer, penalizer)
            return fitter
        raise ClvFitError(
            f"{name} could not be fitted on {len(columns[0])} customers ({failure}), with penalizer "
            f"{' or '.join(f'{p:g}' for p in tries)}; a longer history helps, or a larger clv.penalizer"
        )

    def params(self) -> dict[str, float]:
        """Fitted parameters: BG/NBD r, alpha (per day), a, b and Gamma-Gamma p, q, v."""
        self._check_fitted()
        fitted = {**self.purchases_.params_.to_dict(), **self.spend_.params_.to_dict()}
        return {str(k): float(v) for k, v in fitted.items()}

    def predict(self, summary: PurchaseSummary, horizon_days: float | None = None) -> ClvPrediction:
        """Probability alive, expected purchase days and net value per purchase over the horizon."""
        self._check_fitted()
        horizon = self.config.horizon_days if horizon_days is None else horizon_days
        freq, rec, age = summary.frequency, summary.recency, summary.T
        with np.errstate(all="ignore"):
            purchases = self.purchases_.conditional_expected_number_of_purchases_up_to_time(horizon, freq, rec, age)
            alive = self.purchases_.conditional_probability_alive(freq, rec, age)
            value = self.spend_.conditional_expected_average_profit(freq, np.maximum(summary.repeat_value, 0.0))
        return ClvPrediction(
            np.asarray(alive, dtype=float), np.asarray(purchases, dtype=float), np.asarray(value, dtype=float)
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "spend_"):
            raise ClvFitError("the CLV model is not fitted yet: call fit(summary) first")


@dataclass(frozen=True)
class ForecastErrors:
    """How far one forecast of the holdout window is from what customers did."""

    predicted_purchases: float
    predicted_spend: float
    purchases_total_error_pct: float
    spend_total_error_pct: float
    purchases_mae: float
    spend_mae: float


@dataclass(frozen=True)
class ClvValidation:
    """BG/NBD + Gamma-Gamma against the naive forecast on a holdout window the fit never saw.

    ``customers`` holds one row per calibration purchaser: user_id, frequency, actual_/predicted_/
    naive_ purchases and spend. Customers whose first purchase falls in the holdout are not
    scored (no model can forecast them); ``new_in_holdout`` counts them.
    """

    calibration_end: datetime
    holdout_end: datetime
    horizon_days: float
    actual_purchases: float
    actual_spend: float
    new_in_holdout: int
    params: dict[str, float]
    model: ForecastErrors
    naive: ForecastErrors
    customers: pa.Table


def validate_clv(
    events: pa.Table,
    calibration_end: datetime,
    holdout_end: datetime,
    config: ClvConfig | None = None,
    purchase_types: tuple[str, ...] = ("purchase",),
    return_types: tuple[str, ...] = ("return",),
) -> ClvValidation:
    """Fit on ``[start, calibration_end)``, forecast ``[calibration_end, holdout_end)``, compare with reality.

    The naive baseline repeats each customer's historical rate: ``frequency / T`` purchase days
    per day over the horizon, each worth the customer's mean net value per purchase day.
    """
    if as_of_micros(holdout_end) <= as_of_micros(calibration_end):
        raise ConfigError(
            f"holdout_end {holdout_end.isoformat()} must be after calibration_end {calibration_end.isoformat()}"
        )
    calibration = purchase_summary(events, calibration_end, purchase_types, return_types)
    later = events.filter(pa.array(event_micros(events) >= as_of_micros(calibration_end)))
    if later.num_rows == 0:
        raise ConfigError(f"no events at or after calibration_end {calibration_end.isoformat()}: nothing to validate")
    holdout = purchase_summary(later, holdout_end, purchase_types, return_types)
    horizon = (holdout_end - calibration_end) / timedelta(days=1)
    model = ClvModel(config).fit(calibration)
    forecast = model.predict(calibration, horizon)
    at, seen = locate(holdout.user_ids, calibration.user_ids)
    actual_purchases = take(holdout.days.astype(float), at, seen, 0.0)
    actual_spend = take(holdout.net_value, at, seen, 0.0)
    naive_purchases = calibration.frequency / calibration.T * horizon
    naive_spend = naive_purchases * np.maximum(calibration.net_value / calibration.days, 0.0)
    customers = pa.table(
        {
            "user_id": calibration.user_ids,
            "frequency": calibration.frequency,
            "actual_purchases": actual_purchases,
            "predicted_purchases": forecast.expected_purchases,
            "naive_purchases": naive_purchases,
            "actual_spend": actual_spend,
            "predicted_spend": forecast.clv,
            "naive_spend": naive_spend,
        }
    )
    return ClvValidation(
        calibration_end=calibration_end,
        holdout_end=holdout_end,
        horizon_days=horizon,
        actual_purchases=float(actual_purchases.sum()),
        actual_spend=float(actual_spend.sum()),
        new_in_holdout=int(len(holdout) - seen.sum()),
        params=model.params(),
        model=_errors(forecast.expected_purchases, forecast.clv, actual_purchases, actual_spend),
        naive=_errors(naive_purchases, naive_spend, actual_purchases, actual_spend),
        customers=customers,
    )


def _errors(purchases: np.ndarray, spend: np.ndarray, actual: np.ndarray, actual_spend: np.ndarray) -> ForecastErrors:
    def pct(predicted: float, real: float) -> float:
        return float("nan") if real == 0 else 100.0 * (predicted - real) / real

    return ForecastErrors(
        predicted_purchases=float(purchases.sum()),
        predicted_spend=float(spend.sum()),
        purchases_total_error_pct=pct(float(purchases.sum()), float(actual.sum())),
        spend_total_error_pct=pct(float(spend.sum()), float(actual_spend.sum())),
        purchases_mae=float(np.abs(purchases - actual).mean()),
        spend_mae=float(np.abs(spend - actual_spend).mean()),
    )
