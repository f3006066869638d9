"""Bayesian Personalized Ranking (Rendle et al. 2009) on implicit's CPU trainer.

BPR learns item vectors and an item bias so that, for each user, items they interacted
with score above items they did not; it optimises the ranking directly. implicit treats
every non-zero cell as one positive (weights are ignored while training).

BPR has no closed form for a new user, so any history is folded in as the interest-weighted
mean of its items' vectors, computed for all rows at once by one sparse product. From a zero
vector, the gradient of the user's BPR objective, averaged over its (positive, negative)
pairs, is half the difference between that mean and the mean of all other items' vectors;
the latter is nearly the same for every user (subtracting it changed nothing when tried), so
the fold-in is one gradient step. A purchase pulls the vector
more than a view; an empty history leaves only the item bias, a popularity-like ranking.
On MovieLens-100k (split u1, ratings >= 4) recall@20 was 0.40 with this fold-in, 0.32 with
the trained user vectors, 0.25-0.26 with a ridge least-squares fold-in and 0.24 for popularity.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.bpr import BayesianPersonalizedRanking
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.factors import FactorModel


class BPRConfig(BaseModel):
    """Factor count, SGD step and penalty, epochs and reproducibility."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factors: int = Field(64, ge=1, description="latent dimensions per item")
    learning_rate: float = Field(0.01, gt=0, description="SGD step size")
    regularization: float = Field(0.01, ge=0, description="L2 penalty on the factors and bias")
    iterations: int = Field(100, ge=1, description="epochs of sampled (user, positive, negative) triples")
    seed: int = Field(0, description="seeds the initial factors and the sampling")
    threads: int = Field(
        1, ge=0, description="SGD threads, 0 = all cores; above 1 runs are faster but not reproducible (Hogwild)"
    )


class BPR(FactorModel):
    """Pairwise-ranking matrix factorisation; users are folded in from their histories."""

    config: BPRConfig
    similar_items_rank = 3
    tuning_grid = ({"factors": 64, "learning_rate": 0.01}, {"factors": 128, "learning_rate": 0.05})
    fit_per_million = 15.0

    def __init__(self, config: BPRConfig | None = None) -> None:
        self.config = config or BPRConfig()

    def _fit(self, data: Interactions) -> None:
        cfg = self.config
        bpr = BayesianPersonalizedRanking(
            factors=cfg.factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            iterations=cfg.iterations,
            num_threads=cfg.threads,
            random_state=cfg.seed,
        )
        bpr.fit(sp.csr_matrix(data.matrix, dtype=np.float32), show_progress=False)
        # implicit appends the item bias as a last factor (users carry a constant 1 there).
        factors = np.asarray(bpr.item_factors)
        self.item_factors_ = np.ascontiguousarray(factors[:, :-1])
        self.item_bias_ = factors[:, -1].astype(np.float64)

    def _user_factors(self, matrix: sp.csr_matrix) -> np.ndarray:
        weights = sp.csr_matrix(matrix, dtype=np.float64)
        totals = np.asarray(weights.sum(axis=1)).ravel()
        share = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
        return np.asarray(sp.diags(share) @ weights @ self.item_factors_)
