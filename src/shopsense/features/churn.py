"""Churn risk: the probability that a customer buys nothing in the next ``horizon_days``, learned from the shop's past.

BG/NBD's ``p_alive`` is a model quantity, not a forecast a marketer can act on: on a year of
wholesale data (Online Retail) it fits so little dropout that a customer silent for a year keeps a
high ``p_alive``, and a one-time buyer is alive by construction. Churn risk is
therefore learned directly, the way an audience is: features of every purchaser at
``as_of - horizon``, labelled by whether they bought in ``[as_of - horizon, as_of)``, a small
gradient-boosted model with monotone constraints (longer silence never lowers the risk, more
purchase days never raise it), then applied to the same features at ``as_of``. Nothing at or
after ``as_of`` is read. A history shorter than two horizons (a trial export of a few months) learns
over half its length instead, never under ``min_horizon_days``; the horizon used is part of the
result. A history too short even for that gives no model and a reason, never a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score

from shopsense.errors import ShopsenseError
from shopsense.features.clv import (
    DAY_US,
    PurchaseSummary,
    as_of_micros,
    event_micros,
    locate,
    purchase_summary,
    type_flags,
)

FEATURES = ("days_since_purchase", "purchase_days", "age_days", "mean_gap_days", "net_value")
MONOTONE = (1, -1, 0, 0, 0)
"""Risk never falls with a longer silence and never rises with more purchase days."""


class ChurnFitError(ShopsenseError):
    """The history cannot hold one labelled horizon with enough churned and retained customers."""


class ChurnConfig(BaseModel):
    """The churn horizon and the least history a model is fitted on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_days: float = Field(90.0, gt=0, description="churned: no purchase within this many days")
    min_horizon_days: float = Field(
        7.0, gt=0, description="a shorter history learns over half its length, but never a horizon below this"
    )
    min_per_class: int = Field(20, ge=5, description="fewer churned or retained customers: too little to learn")
    seed: int = 0


@dataclass(frozen=True)
class ChurnModel:
    """A fitted churn model and how well it ranked held-out customers of its own labelled horizon."""

    booster: object
    horizon_days: float
    validation_auc: float
    customers: int
    churned_share: float

    def predict(self, summary: PurchaseSummary) -> np.ndarray:
        """P(no purchase in the next ``horizon_days``) for each purchaser of ``summary``."""
        return np.asarray(self.booster.predict_proba(churn_features(summary))[:, 1], dtype=float)  # type: ignore[attr-defined]


def churn_features(summary: PurchaseSummary) -> np.ndarray:
    """The features of :data:`FEATURES`, one row per purchaser, in days and money."""
    repeats = summary.days - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_gap = np.where(repeats > 0, summary.recency / np.maximum(repeats, 1), np.nan)
    return np.column_stack(
        [summary.T - summary.recency, summary.days.astype(float), summary.T, mean_gap, summary.net_value]
    )


def fit_churn(
    events: pa.Table,
    as_of: datetime,
    config: ChurnConfig,
    purchase_types: tuple[str, ...] = ("purchase",),
    return_types: tuple[str, ...] = ("return",),
) -> ChurnModel:
    """Learn churn from the last full horizon before ``as_of`` (shortened for a short history, see the module).

    Raises:
        ChurnFitError: the history before ``as_of - horizon`` has too few churned or retained purchasers.
    """
    import lightgbm as lgb  # loaded only when profiles are built

    micros = event_micros(events)
    span_days = (as_of_micros(as_of) - int(micros.min(initial=as_of_micros(as_of)))) / DAY_US
    horizon = min(config.horizon_days, float(np.floor(span_days / 2)))
    if horizon < config.min_horizon_days:
        raise ChurnFitError(
            f"churn needs a history of at least {2 * config.min_horizon_days:g} days to learn from (one horizon "
            f"before the labelled one); this one spans {span_days:.1f} days (profiles.churn.min_horizon_days)"
        )
    cut = as_of - timedelta(days=horizon)
    before = purchase_summary(events, cut, purchase_types, return_types)
    window = type_flags(events, purchase_types) & (micros >= as_of_micros(cut)) & (micros < as_of_micros(as_of))
    buyers = np.unique(events.column("user_id").to_numpy(zero_copy_only=False)[window].astype(str))
    churned = ~locate(buyers, before.user_ids.astype(str))[1]
    counts = int(churned.sum()), int((~churned).sum())
    if min(counts) < config.min_per_class:
        raise ChurnFitError(
            f"churn needs at least {config.min_per_class} churned and {config.min_per_class} retained purchasers "
            f"over the last {horizon:g} days; the history has {counts[0]} and {counts[1]}"
        )
    features = churn_features(before)
    held = np.random.default_rng(config.seed).random(len(churned)) < 0.2

    def model() -> lgb.LGBMClassifier:
        return lgb.LGBMClassifier(
            n_estimators=200,
            learning_rate=0.05,
            num_leaves=15,
            min_child_samples=20,
            monotone_constraints=list(MONOTONE),
            random_state=config.seed,
            deterministic=True,
            n_jobs=1,
            verbose=-1,
        )

    probe = model().fit(features[~held], churned[~held])
    both = held.any() and len(np.unique(churned[held])) == 2
    auc = (
        float(roc_auc_score(churned[held], np.asarray(probe.predict_proba(features[held]))[:, 1]))
        if both
        else float("nan")
    )
    booster = model().fit(features, churned)
    return ChurnModel(booster, horizon, auc, len(churned), float(churned.mean()))
