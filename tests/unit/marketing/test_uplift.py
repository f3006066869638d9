"""Uplift models find the one region that responds to treatment; targeting and policy value have known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shopsense.errors import ConfigError
from shopsense.marketing.uplift import (
    APPROACHES,
    Approach,
    UpliftConfig,
    UpliftModel,
    evaluate_uplift,
    policy_value,
    target,
    uplift_at_fraction,
)
from shopsense.models.base import NotFitted

N, TRAIN = 4000, 3000
FAST = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 40}


def experiment(seed: int = 7, treated_share: float = 0.5) -> dict[str, Any]:
    """Randomised campaign where only people with x0 > 0.7 respond (+30 points); x1 drives the baseline only.

    x1 is a "sure thing" feature: it raises conversion in both arms, so a response model would rank on it,
    while the right uplift ranking depends on x0 alone.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(N, 5))
    effect = np.where(x[:, 0] > 0.7, 0.3, 0.0)
    t = (rng.uniform(size=N) < treated_share).astype(np.int8)
    y = (rng.uniform(size=N) < 0.1 + 0.3 * x[:, 1] + t * effect).astype(np.int8)
    return {"x": x, "t": t, "y": y, "effect": effect}


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return experiment()


def fit(data: dict[str, Any], approach: Approach, seed: int = 0) -> UpliftModel:
    config = UpliftConfig(approach=approach, seed=seed, **FAST)
    return UpliftModel(config).fit(data["x"][:TRAIN], data["t"][:TRAIN], data["y"][:TRAIN])


@pytest.mark.parametrize("approach", APPROACHES)
def test_every_approach_ranks_the_responsive_region_first(data: dict[str, Any], approach: Approach) -> None:
    held = slice(TRAIN, None)
    uplift = fit(data, approach).predict_uplift(data["x"][held])
    y, t, effect = data["y"][held], data["t"][held], data["effect"][held]

    random_scores = np.random.default_rng(0).uniform(size=len(uplift))
    ours, chance = evaluate_uplift(y, t, uplift), evaluate_uplift(y, t, random_scores)
    oracle = evaluate_uplift(y, t, effect + 1e-6 * random_scores)  # true effect, ties broken at random
    assert ours["qini_auc"] > chance["qini_auc"] + 0.05
    assert ours["qini_auc"] > 0.6 * oracle["qini_auc"]

    chosen = target(uplift, 0.3)
    # 30% of people respond (+0.3 each), so random picks average 0.09 in both parts; a perfect ranking 0.3 and 0.
    assert effect[chosen].mean() > 0.18 > 0.07 > effect[~chosen].mean()
    assert ours["uplift_at_k"] > ours["random_uplift"] + 0.1


def test_class_transformation_reweights_unbalanced_arms() -> None:
    """With 20% treated, the unweighted z-label mostly learns P(control and no conversion): top 30% only 0.13."""
    data = experiment(seed=11, treated_share=0.2)
    held = slice(TRAIN, None)
    uplift = fit(data, "class_transformation").predict_uplift(data["x"][held])
    chosen = target(uplift, 0.3)
    assert data["effect"][held][chosen].mean() > 0.18 > 0.07 > data["effect"][held][~chosen].mean()


@pytest.mark.parametrize("approach", ["t_learner", "x_learner"])
def test_same_seed_same_uplift(data: dict[str, Any], approach: Approach) -> None:
    first = fit(data, approach, seed=3).predict_uplift(data["x"])
    again = fit(data, approach, seed=3).predict_uplift(data["x"])
    np.testing.assert_array_equal(first, again)


def test_tables_one_hot_text_columns_the_same_from_pandas_and_arrow() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    region = rng.choice(["north", "south", "west"], size=n)
    spend = rng.uniform(size=n)
    t = rng.integers(0, 2, size=n)
    y = (rng.uniform(size=n) < 0.1 + 0.2 * spend + 0.3 * t * (region == "north")).astype(int)
    frame = pd.DataFrame({"region": region, "spend": spend}, index=np.arange(n) + 1000)  # index is not a feature

    model = UpliftModel(UpliftConfig(approach="t_learner", **FAST)).fit(frame, t, y)
    assert model.feature_names_ == ["region=north", "region=south", "region=west", "spend"]

    probe = pa.table({"spend": [0.5, 0.5, 0.5], "region": ["north", "south", "mars"]})  # order and unseen value
    uplift = model.predict_uplift(probe)
    assert uplift[0] > uplift[1] + 0.15
    np.testing.assert_array_equal(model.predict_uplift(frame), model.predict_uplift(pa.Table.from_pandas(frame)))


def test_target_picks_the_top_fraction_and_keeps_row_order_on_ties() -> None:
    mask = target([0.1, 0.5, -0.2, 0.5, 0.3], fraction=0.4)
    assert mask.tolist() == [False, True, False, True, False]
    assert target([0.1, 0.5, -0.2, 0.5, 0.3], fraction=0.5).sum() == 2  # int(5 * 0.5), as sklift counts


@given(arrays(np.float64, st.integers(1, 200), elements=st.floats(-1, 1)), st.floats(0.01, 1))
def test_target_chosen_scores_are_never_below_the_rest(scores: np.ndarray, fraction: float) -> None:
    if int(len(scores) * fraction) == 0:
        return
    mask = target(scores, fraction)
    assert mask.sum() == int(len(scores) * fraction)
    if (~mask).any():
        assert scores[mask].min() >= scores[~mask].max()


# Eight held-out people: the four the model ranks top split 2 treated (both bought) / 2 control (neither);
# among the rest, no one bought. Treated rate overall 2/4, control 0/4.
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
TREATED = np.array([1, 0, 1, 0, 1, 0, 1, 0])
BOUGHT = np.array([1, 0, 1, 0, 0, 0, 0, 0])


def test_policy_value_counts_incremental_conversions_against_random_contacts() -> None:
    value = policy_value(BOUGHT, TREATED, SCORES, fraction=0.5)
    assert (value.contacted, value.uplift, value.uplift_se) == (4, 1.0, 0.0)
    assert value.random_uplift == 0.5
    assert (value.incremental, value.random_incremental) == (4.0, 2.0)


def test_uplift_at_fraction_by_group_and_overall() -> None:
    # by group: top half of each arm = treated rows 0,2 (2/2 bought), control rows 1,3 (0/2) -> 1.0.
    assert uplift_at_fraction(BOUGHT, TREATED, SCORES, 0.5, "by_group") == 1.0
    # overall, top quarter = rows 0,1: treated 1/1, control 0/1 -> 1.0; top 3/4 = rows 0-5: 2/3 - 0/3.
    assert uplift_at_fraction(BOUGHT, TREATED, SCORES, 0.75, "overall") == pytest.approx(2 / 3)
    metrics = evaluate_uplift(BOUGHT, TREATED, SCORES, fraction=0.5)
    assert metrics["uplift_at_k"] == 1.0
    assert metrics["random_uplift"] == 0.5
    assert metrics["qini_auc"] > evaluate_uplift(BOUGHT, TREATED, -SCORES)["qini_auc"]


X4 = np.zeros((4, 2))


@pytest.mark.parametrize(
    ("x", "t", "y", "message"),
    [
        (X4, [1, 0, 1], [1, 0, 1, 0], "treatment: expected 4 values"),
        (X4, [1, 0, 2, 0], [1, 0, 1, 0], "treatment: values must be 0 or 1; row 2 is"),
        (X4, [1, 0, 1, 0], [1, 0, np.nan, 0], "outcome: values must be 0 or 1; row 2 is"),
        (X4, ["a", "b", "a", "b"], [1, 0, 1, 0], "treatment: expected 0/1 numbers"),
        (X4, [1, 1, 1, 1], [1, 0, 1, 0], r"only arm\(s\) \[1\] present"),
        (X4, [1, 0, 1, 0], [1, 0, 1, 0], "the treatment group has only outcome=1"),
        (np.zeros(4), [1, 0, 1, 0], [1, 0, 1, 0], "expected a 2-D array"),
        (np.array([["a"], ["b"], ["a"], ["b"]]), [1, 0, 1, 0], [1, 1, 0, 0], "is not numeric"),
        (pa.table({"when": pa.array([0, 1, 2, 3], pa.timestamp("s"))}), [1, 0, 1, 0], [1, 1, 0, 0], "'when' has type"),
    ],
)
def test_bad_input_says_what_is_wrong(x: Any, t: Any, y: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UpliftModel().fit(x, t, y)


def test_predict_checks_it_was_fitted_on_the_same_features() -> None:
    with pytest.raises(NotFitted):
        UpliftModel().predict_uplift(X4)
    t, y = np.array([1, 0] * 20), np.array([1, 1, 0, 0] * 10)
    on_array = UpliftModel(UpliftConfig(n_estimators=2, min_child_samples=2)).fit(np.ones((40, 2)), t, y)
    with pytest.raises(ConfigError, match="fitted on a 2-column array, got 3"):
        on_array.predict_uplift(np.ones((5, 3)))
    table = pa.table({"a": np.ones(40), "b": ["u", "v"] * 20})
    on_table = UpliftModel(UpliftConfig(n_estimators=2, min_child_samples=2)).fit(table, t, y)
    with pytest.raises(ConfigError, match=r"columns \['b'\] were present at fit time"):
        on_table.predict_uplift(pa.table({"a": [1.0]}))


def test_metric_helpers_reject_bad_fractions_and_scores() -> None:
    with pytest.raises(ConfigError, match=r"fraction: got .* must be in \(0, 1\]"):
        target([0.1, 0.2], fraction=0.3)
    with pytest.raises(ConfigError, match=r"fraction: got .* must be in \(0, 1\]"):
        uplift_at_fraction(BOUGHT, TREATED, SCORES, fraction=1.5)
    with pytest.raises(ConfigError, match="finite"):
        evaluate_uplift(BOUGHT, TREATED, [np.nan] * 8)
    with pytest.raises(ConfigError, match="hold only one arm"):
        policy_value(BOUGHT, TREATED, SCORES, fraction=0.125)
