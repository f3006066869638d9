"""Churn risk: learned from the last full horizon, monotone in silence and purchase days, refused when too short."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shopsense.features.churn import FEATURES, ChurnConfig, ChurnFitError, churn_features, fit_churn
from shopsense.features.clv import purchase_summary


def _as_of(events: pa.Table) -> object:
    return pc.max(events["timestamp"]).as_py() + timedelta(seconds=1)


def test_longer_silence_never_lowers_and_more_purchase_days_never_raise_the_risk(
    shop_tables: tuple[pa.Table, pa.Table],
) -> None:
    events, _ = shop_tables
    as_of = _as_of(events)
    model = fit_churn(events, as_of, ChurnConfig(horizon_days=14))  # type: ignore[arg-type]
    assert 0 < model.churned_share < 1 and model.customers > 100
    assert 0 <= model.validation_auc <= 1
    summary = purchase_summary(events, as_of)  # type: ignore[arg-type]
    risk = model.predict(summary)
    assert ((risk >= 0) & (risk <= 1)).all()
    features = churn_features(summary)
    assert np.allclose(model.booster.predict_proba(features)[:, 1], risk)  # type: ignore[attr-defined]

    def moved(column: int, by: float) -> np.ndarray:
        changed = features.copy()
        changed[:, column] += by
        return np.asarray(model.booster.predict_proba(changed)[:, 1])  # type: ignore[attr-defined]

    assert (moved(FEATURES.index("days_since_purchase"), 30) >= risk - 1e-12).all()
    assert (moved(FEATURES.index("purchase_days"), 3) <= risk + 1e-12).all()


def test_a_short_history_learns_over_half_its_length_and_a_tiny_one_is_refused(
    shop_tables: tuple[pa.Table, pa.Table],
) -> None:
    events, _ = shop_tables
    as_of = _as_of(events)
    span = (as_of - pc.min(events["timestamp"]).as_py()).total_seconds() / 86400
    assert span < 180
    model = fit_churn(events, as_of, ChurnConfig(horizon_days=90))  # type: ignore[arg-type]
    assert model.horizon_days == np.floor(span / 2)
    with pytest.raises(ChurnFitError, match="at least 140 days"):
        fit_churn(events, _as_of(events), ChurnConfig(min_horizon_days=70))  # type: ignore[arg-type]


def test_on_a_year_of_online_retail_it_ranks_held_out_customers_well(demo_events: pa.Table) -> None:
    model = fit_churn(demo_events, _as_of(demo_events), ChurnConfig())  # type: ignore[arg-type]
    assert model.customers > 500 and 0.2 < model.churned_share < 0.8
    assert model.validation_auc > 0.65  # held-out customers of the labelled horizon, not training rows
