from __future__ import annotations

import lightgbm as lgb
import numpy as np

from shopsense.ranking.heads import LeafPaths


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
