"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) on implicit's CPU solver.

Every user x item cell is a preference: 1 where the user showed interest, 0 elsewhere,
trusted with confidence ``alpha * weight`` (implicit's form of the paper's ``1 + alpha r``;
unseen cells keep confidence 1). The interaction weights already grade interest (a purchase
outweighs a view, old events may be decayed), so ``alpha`` only rescales them all.

Any history is scored by solving its user vector exactly against the fixed item factors
(``recalculate_user``: one regularised weighted least-squares solve per row, in implicit's
threaded Cython). That is the user half of every training sweep, solved exactly where
training takes a few conjugate-gradient steps, so a training user gets (nearly) its learned
vector and a live or brand-new history is treated the same way.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Interactions
from shopsense.models.factors import FactorModel


class ALSConfig(BaseModel):
    """Factor count, regularisation, iterations, confidence scaling and reproducibility."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factors: int = Field(64, ge=1, description="latent dimensions per user and item")
    regularization: float = Field(1.0, ge=0, description="L2 penalty on the factors")
    iterations: int = Field(15, ge=1, description="alternating sweeps over users and items")
    alpha: float = Field(1.0, gt=0, description="confidence = alpha x interest weight; scales all weights at once")
    seed: int = Field(0, description="seeds the initial factors: same data and seed, same model")
    threads: int = Field(0, ge=0, description="solver threads, 0 = all cores; results do not depend on it")


class ALS(FactorModel):
    """Weighted matrix factorisation; user vectors are re-solved from each history when scoring."""

    config: ALSConfig
    similar_items_rank = 2
    tuning_grid = (
        {"factors": 64, "regularization": 1.0, "alpha": 1.0},
        {"factors": 128, "regularization": 5.0, "alpha": 1.0},
        {"factors": 64, "regularization": 1.0, "alpha": 10.0},
    )
    fit_per_million = 35.0
    rank_per_billion = 70.0

    def __init__(self, config: ALSConfig | None = None) -> None:
        self.config = config or ALSConfig()

    def _fit(self, data: Interactions) -> None:
        als = _solver(self.config)
        als.fit(sp.csr_matrix(data.matrix, dtype=np.float32), show_progress=False)
        self._keep(als)

    @classmethod
    def from_item_factors(cls, item_factors: np.ndarray, config: ALSConfig) -> ALS:
        """An ALS whose item factors were fitted elsewhere (Spark's MLlib): scored exactly as one fitted
        here, by implicit's solver re-solving each user from their history."""
        solver = _solver(config)
        solver.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        model = cls(config)
        model._keep(solver)
        model.n_items_ = item_factors.shape[0]
        return model

    def _keep(self, als: AlternatingLeastSquares) -> None:
        # Scoring re-solves users from their histories, so the training users' vectors are
        # never read again: drop them to keep saved models the size of the catalogue.
        als.user_factors = None
        self.als_ = als
        self.item_factors_ = np.asarray(als.item_factors)

    def _user_factors(self, matrix: sp.csr_matrix) -> np.ndarray:
        return np.asarray(self.als_.recalculate_user(np.arange(matrix.shape[0]), sp.csr_matrix(matrix)))


def _solver(cfg: ALSConfig) -> AlternatingLeastSquares:
    return AlternatingLeastSquares(
        factors=cfg.factors,
        regularization=cfg.regularization,
        alpha=cfg.alpha,
        iterations=cfg.iterations,
        num_threads=cfg.threads,
        random_state=cfg.seed,
    )
