"""CLV: the purchase summary on known answers, BG/NBD + Gamma-Gamma on data drawn from their own process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lifetimes import BetaGeoFitter
from lifetimes.utils import ConvergenceError

from shopsense.errors import ConfigError
from shopsense.features import clv
from shopsense.features.clv import (
    DAY_US,
    ClvConfig,
    ClvFitError,
    ClvModel,
    as_of_micros,
    purchase_summary,
    validate_clv,
)

START = datetime(2023, 1, 1, tzinfo=UTC)
TRUE = {"r": 0.6, "alpha": 20.0, "a": 1.0, "b": 4.0, "p": 4.0, "q": 5.0, "v": 20.0}
"""BG/NBD (rates per day) and Gamma-Gamma parameters the simulated customers are drawn from."""


def simulated_purchases(
    n: int = 2000,
    seed: int = 0,
    days: float = 545.0,
    items: tuple[str, ...] = ("A",),
    dropout: bool = True,
) -> pa.Table:
    """Purchase events of ``n`` customers following BG/NBD (timing) and Gamma-Gamma (values).

    Each customer buys first at a uniform time in the first 180 days, then at Poisson times with
    rate lambda ~ Gamma(r, alpha), and drops out after each repeat purchase with probability
    p ~ Beta(a, b); each purchase is worth Gamma(p, nu) with nu ~ Gamma(q, v) per customer.
    """
    rng = np.random.default_rng(seed)
    rate = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    drop = rng.beta(TRUE["a"], TRUE["b"], n)
    max_repeats = 200
    gaps = rng.exponential(1.0, (n, max_repeats)) / rate[:, None]
    times = rng.uniform(0, 180, n)[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, axis=1)], axis=1)
    repeats = rng.geometric(drop) if dropout else np.full(n, max_repeats)
    bought = (np.arange(max_repeats + 1) <= repeats[:, None]) & (times < days)
    user, when = np.nonzero(bought)[0], times[bought]
    scale = rng.gamma(TRUE["q"], 1 / TRUE["v"], n)
    micros = as_of_micros(START) + (when * DAY_US).astype(np.int64)
    return pa.table(
        {
            "user_id": pa.array(np.char.add("c", user.astype(str))),
            "item_id": rng.choice(np.array(items), len(user)),
            "type": pa.array(["purchase"] * len(user)),
            "timestamp": pa.array(micros).cast(pa.timestamp("us", tz="UTC")),
            "channel": rng.choice(np.array(["web", "app", "store"]), len(user)),
            "session_id": pa.array(np.char.add("o", np.arange(len(user)).astype(str))),
            "quantity": np.ones(len(user)),
            "value": np.round(rng.gamma(TRUE["p"], 1 / scale[user]), 2),
        }
    )


def _table(rows: list[tuple[str, str, float, float]]) -> pa.Table:
    users, types, days, values = zip(*rows, strict=True)
    return pa.table(
        {
            "user_id": list(users),
            "type": list(types),
            "timestamp": pa.array([START + timedelta(days=d) for d in days], pa.timestamp("us", tz="UTC")),
            "value": list(values),
        }
    )


def test_summary_counts_purchase_days_and_nets_returns_against_them() -> None:
    events = _table(
        [
            ("a", "purchase", 0 + 10 / 24, 10.0),
            ("a", "purchase", 0 + 15 / 24, 5.0),  # same day: one purchase day worth 15
            ("a", "purchase", 10.4, 20.0),
            ("a", "return", 10.7, 8.0),  # refunds day 10: 12 left
            ("a", "purchase", 30.1, 40.0),
            ("a", "return", 35.0, 4.0),  # no purchase that day: refunds day 30, 36 left
            ("b", "return", 5.0, 50.0),  # before b's first purchase: refunds nothing (and not a's)
            ("b", "purchase", 20.0, 100.0),
            ("b", "view", 22.0, 0.0),
            ("a", "purchase", 40.5, 999.0),  # at as_of: not history
            ("a", "purchase", 41.0, 999.0),
        ]
    )
    summary = purchase_summary(events, START + timedelta(days=40.5))
    assert summary.user_ids.tolist() == ["a", "b"]
    assert summary.days.tolist() == [3, 1]
    assert summary.frequency.tolist() == [2.0, 0.0]
    assert summary.recency.tolist() == [30.0, 0.0]
    assert summary.T.tolist() == pytest.approx([40.5, 20.5])
    assert summary.repeat_value.tolist() == pytest.approx([(12 + 36) / 2, 0.0])
    assert summary.net_value.tolist() == pytest.approx([15 + 12 + 36, 100.0])


def test_summary_types_are_parameters() -> None:
    events = _table([("a", "order", 0.0, 10.0), ("a", "order", 3.0, 10.0), ("a", "refund", 3.5, 10.0)])
    summary = purchase_summary(events, START + timedelta(days=5), ("order",), ("refund",))
    assert summary.days.tolist() == [2] and summary.net_value.tolist() == [10.0]
    assert len(purchase_summary(events, START + timedelta(days=5))) == 0  # no "purchase" events at all


def test_fitted_model_recovers_the_process_and_beats_the_naive_rate() -> None:
    events = simulated_purchases()
    result = validate_clv(events, START + timedelta(days=365), START + timedelta(days=545))
    assert result.horizon_days == 180.0
    assert result.customers.num_rows == len(purchase_summary(events, START + timedelta(days=365)))
    assert result.new_in_holdout == 0  # everyone's first purchase is in the first 180 days
    # Aggregate: the model's total is close; per customer it beats repeating each one's own rate.
    assert abs(result.model.purchases_total_error_pct) < 10
    assert result.model.purchases_mae < 0.85 * result.naive.purchases_mae
    assert result.model.spend_mae < result.naive.spend_mae
    assert abs(result.model.spend_total_error_pct) < 15
    assert result.params["r"] == pytest.approx(TRUE["r"], rel=0.3)
    assert result.params["alpha"] == pytest.approx(TRUE["alpha"], rel=0.3)
    assert result.params["v"] * result.params["p"] / (result.params["q"] - 1) == pytest.approx(
        TRUE["v"] * TRUE["p"] / (TRUE["q"] - 1), rel=0.25
    )


def test_prediction_columns_are_consistent() -> None:
    summary = purchase_summary(simulated_purchases(n=600, seed=1), START + timedelta(days=400))
    model = ClvModel(ClvConfig(horizon_days=30)).fit(summary)
    month, quarter = model.predict(summary), model.predict(summary, 90)
    assert ((month.p_alive > 0) & (month.p_alive <= 1)).all()
    assert (month.p_alive[summary.days == 1] == 1).all()  # BG/NBD: no dropout before a repeat purchase
    assert (quarter.expected_purchases > month.expected_purchases).all()
    np.testing.assert_allclose(month.clv, month.expected_purchases * month.expected_avg_value)
    assert (month.expected_avg_value > 0).all()


def test_nobody_dropping_out_is_a_valid_fit() -> None:
    immortal = purchase_summary(simulated_purchases(n=800, seed=3, dropout=False), START + timedelta(days=300))
    model = ClvModel().fit(immortal)
    assert model.params()["a"] / model.params()["b"] < 1e-6  # mean dropout probability ~ 0
    assert model.params()["r"] == pytest.approx(TRUE["r"], rel=0.3)


def test_fit_failures_are_clear_errors(shop_tables: tuple[pa.Table, pa.Table]) -> None:
    few = purchase_summary(simulated_purchases(n=15, seed=2), START + timedelta(days=300))
    with pytest.raises(ClvFitError, match="repeat purchasers with positive spend"):
        ClvModel().fit(few)
    with pytest.raises(ClvFitError, match="not fitted"):
        ClvModel().predict(few)
    # Synthetic shop: 40 days of steady shoppers, no dropout yet; lifetimes' penalty drags a and b
    # to 0 with it, where BFGS stops on "precision loss" (without the penalty the fit is fine).
    events = shop_tables[0]
    summary = purchase_summary(events, pc.min_max(events["timestamp"])["min"].as_py() + timedelta(days=40))
    assert ClvModel().fit(summary).params()["b"] > 100
    with pytest.raises(ClvFitError, match=r"BG/NBD could not be fitted on \d+ customers .* did not converge"):
        ClvModel(ClvConfig(penalizer=0.01)).fit(summary)


def test_validation_refuses_bad_windows() -> None:
    events = simulated_purchases(n=200, seed=4)
    with pytest.raises(ConfigError, match="must be after calibration_end"):
        validate_clv(events, START + timedelta(days=300), START + timedelta(days=300))
    with pytest.raises(ConfigError, match="no events at or after calibration_end"):
        validate_clv(events, START + timedelta(days=900), START + timedelta(days=1000))
    with pytest.raises(ConfigError, match="time-zone-aware datetime"):
        validate_clv(events, datetime(2023, 6, 1), START + timedelta(days=400))


def test_a_fit_that_does_not_converge_is_retried_once_with_the_fallback_penalizer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    summary = purchase_summary(simulated_purchases(n=800, seed=3), START + timedelta(days=300))

    class Flaky(BetaGeoFitter):  # type: ignore[misc]
        def fit(self, *args: Any, **kwargs: Any) -> Any:
            if self.penalizer_coef == 0:
                raise ConvergenceError("The model did not converge.")
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(clv, "BetaGeoFitter", Flaky)
    with caplog.at_level("WARNING"):
        model = ClvModel().fit(summary)
    assert model.purchases_.penalizer_coef == 0.001
    assert "did not converge with penalizer 0; fitted with 0.001" in caplog.text
    with pytest.raises(ClvFitError, match="with penalizer 0; "):
        ClvModel(ClvConfig(fallback_penalizer=0)).fit(summary)
