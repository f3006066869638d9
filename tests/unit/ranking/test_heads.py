from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pytest
from scipy.special import expit

from shopsense.ranking.heads import HEADS, BoostConfig, BoostedHeads, LeafPaths, grouped_rows, platt
from shopsense.ranking.ranker import grouped_ndcg


def test_path_contributions_add_up_to_the_score_and_credit_the_feature_that_matters() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2_000, 4))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take the default branch
    y = (np.nan_to_num(x[:, 0]) + 0.1 * rng.random(2_000) > 0.6).astype(float)  # only feature 0 matters
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": 0, "deterministic": True},
        lgb.Dataset(x, y),
        40,
    )
    leaves = booster.predict(x, pred_leaf=True)
    contributions = LeafPaths(booster).contributions(np.asarray(leaves))
    assert contributions.shape == (2_000, 5)
    assert np.allclose(contributions.sum(axis=1), booster.predict(x, raw_score=True), atol=1e-9)
    assert np.allclose(contributions[:, -1], contributions[0, -1]), "the bias is the same for every pair"
    strongest = np.abs(contributions[:, :-1]).mean(axis=0)
    assert strongest.argmax() == 0 and strongest[0] > 5 * strongest[1:].max()


def ranked_pairs(seed: int, users: int = 300, per_user: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled (user, candidate) pairs whose order within a user is learnable: a known right answer.

    Feature 0 is interest (a user engages with their three candidates of highest interest plus a
    little noise), feature 1 is intent (of those, they buy the one of highest intent); feature 2 is
    noise. The rows are shuffled, so a query group is only contiguous if the heads sort it so.
    """
    rng = np.random.default_rng(seed)
    owners = np.repeat(np.arange(users), per_user)
    x = rng.random((len(owners), 3))
    interest = (x[:, 0] + 0.05 * rng.random(len(owners))).reshape(users, per_user)
    engaged = np.zeros((users, per_user), dtype=bool)
    np.put_along_axis(engaged, np.argsort(-interest, axis=1)[:, :3], True, axis=1)
    intent = np.where(engaged, x[:, 1].reshape(users, per_user), -1.0)
    bought = np.zeros((users, per_user), dtype=bool)
    np.put_along_axis(bought, intent.argmax(axis=1)[:, None], True, axis=1)
    labels = np.column_stack([engaged.ravel(), bought.ravel()]).astype(float)
    order = rng.permutation(len(owners))
    return x[order], labels[order], owners[order]


NAMES = ("interest", "intent", "noise")


def test_grouped_rows_makes_each_users_rows_contiguous_in_their_order() -> None:
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 30, 500)
    mask = rng.random(500) < 0.6
    at, sizes = grouped_rows(mask, groups)
    assert sorted(at.tolist()) == np.flatnonzero(mask).tolist(), "exactly the masked rows, each once"
    assert (np.diff(groups[at]) >= 0).all(), "one run per group"
    kept, counts = np.unique(groups[mask], return_counts=True)
    assert sizes.tolist() == counts.tolist() and sizes.sum() == len(at)
    for group in kept:  # stable: within a group the rows keep their order
        assert (np.diff(at[groups[at] == group]) > 0).all()
    at, sizes = grouped_rows(np.zeros(500, dtype=bool), groups)
    assert len(at) == 0 and len(sizes) == 0


def test_platt_is_monotone_and_flat_where_scores_say_nothing() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(size=4_000)
    labels = (rng.random(4_000) < expit(2.0 * scores - 1.0)).astype(float)
    slope, intercept = platt(scores, labels)
    assert slope == pytest.approx(2.0, rel=0.15) and intercept == pytest.approx(-1.0, abs=0.15)
    rate = labels.mean()
    for inverted in (platt(-scores, labels), platt(np.zeros(4_000), labels)):  # falls with the label / constant
        assert 0 < inverted[0] <= 1e-6, "never a negative slope: the map must keep the ranker's order"
        assert expit(inverted[1]) == pytest.approx(rate)
    one_class = platt(scores, np.zeros(4_000))
    assert 0 < one_class[0] <= 1e-6 and expit(one_class[1]) < 1e-5


def test_lambdarank_heads_learn_each_users_order_and_give_probabilities() -> None:
    x, labels, owners = ranked_pairs(seed=3)
    valid = owners % 4 == 0
    heads = BoostedHeads(BoostConfig(objective="lambdarank", max_trees=80)).fit(x, NAMES, labels, valid, owners)
    assert heads.objective_ == "lambdarank"
    assert set(heads.calibration_) == set(HEADS) and all(slope > 0.01 for slope, _ in heads.calibration_.values())
    test_x, test_labels, test_owners = ranked_pairs(seed=4)
    probabilities = heads.predict(test_x)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    chance = np.random.default_rng(5).random(len(test_x))
    for index, head in enumerate(HEADS):
        learned = grouped_ndcg(test_owners, probabilities[:, index], test_labels[:, index])
        random = grouped_ndcg(test_owners, chance, test_labels[:, index])
        assert learned > random + 0.3, f"{head}: NDCG@10 {learned:.3f} vs random {random:.3f}"
        # calibrated: the mean probability is near the share of positives (Platt on held-out users)
        assert probabilities[:, index].mean() == pytest.approx(test_labels[:, index].mean(), rel=0.25)
        assert heads.validation_[head]["auc"] > 0.8
    # the logistic map keeps the ranker's order (non-decreasing; floats may tie where it saturates)
    raw = heads.boosters_["purchase"].predict(test_x, num_iteration=heads.boosters_["purchase"].best_iteration)
    assert (np.diff(probabilities[np.argsort(raw), 1]) >= 0).all()


def test_lambdarank_needs_groups_and_auto_is_the_rankers_choice() -> None:
    x, labels, owners = ranked_pairs(seed=6, users=40)
    valid = owners % 4 == 0
    with pytest.raises(ValueError, match="groups"):
        BoostedHeads(BoostConfig(objective="lambdarank")).fit(x, NAMES, labels, valid)
    with pytest.raises(ValueError, match="auto"):
        BoostedHeads(BoostConfig(objective="auto")).fit(x, NAMES, labels, valid, owners)


def test_lambdarank_contributions_add_up_to_the_log_odds_of_the_probability() -> None:
    x, labels, owners = ranked_pairs(seed=7, users=200)
    heads = BoostedHeads(BoostConfig(objective="lambdarank", max_trees=40)).fit(
        x, NAMES, labels, owners % 4 == 0, owners
    )
    probabilities = heads.predict(x[:300])
    for index, head in enumerate(HEADS):
        contributions = heads.contributions(x[:300], head)
        assert contributions.shape == (300, len(NAMES) + 1)
        assert np.allclose(expit(contributions.sum(axis=1)), probabilities[:, index], rtol=1e-9, atol=1e-12)
        strongest = np.abs(contributions[:, :-1]).mean(axis=0)
        assert strongest.argmin() == 2, f"{head} credits noise more than {NAMES[strongest.argmin()]}"


def test_binary_heads_predict_the_boosters_probability_with_or_without_a_calibration() -> None:
    """A bundle saved before calibration_ existed predicts and explains exactly as before."""
    x, labels, owners = ranked_pairs(seed=8, users=100)
    heads = BoostedHeads(BoostConfig(max_trees=30)).fit(x, NAMES, labels, owners % 4 == 0, owners)
    assert heads.objective_ == "binary" and heads.calibration_ == {}
    booster = heads.boosters_["attention"]
    expected = booster.predict(x, num_iteration=booster.best_iteration or None)
    before = heads.predict(x), heads.contributions(x, "attention")
    del heads.calibration_
    old = pickle.loads(pickle.dumps(heads))
    assert np.allclose(old.predict(x)[:, 0], expected, rtol=1e-12)
    assert np.array_equal(old.predict(x), before[0]) and np.array_equal(old.contributions(x, "attention"), before[1])
    assert np.allclose(before[1].sum(axis=1), booster.predict(x, num_iteration=booster.best_iteration, raw_score=True))
