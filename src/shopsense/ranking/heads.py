"""The gradient-boosted heads: P(attention) and P(purchase) per (user, candidate) pair, with LightGBM.

Two binary classifiers on the same pair features: attention (the user will view, click,
cart or buy the item in the next window) and purchase (will buy it). Each stops early on
held-out users' log-loss, so the number of trees is chosen without looking at the test
window. Path contributions say why a pair scored high, and the explanations are built from
them: each split on a pair's way down a tree credits its feature with the change in the node's
value (Saabas), so a feature's contributions plus the trees' root values add up exactly to the
log-odds. Each leaf's vector is computed once per model, so a pair's contributions are one
leaf lookup per tree, where exact TreeSHAP (LightGBM's ``pred_contrib``) costs more than the
rest of a recommendation.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import log_loss, roc_auc_score

from shopsense.models.base import NotFitted
from shopsense.ranking.features import CATEGORICAL

HEADS = ("attention", "purchase")
FALLBACK_TREES = 50
"""Trees fitted without early stopping when too few held-out rows exist to stop on."""


class BoostConfig(BaseModel):
    """LightGBM settings shared by both heads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_trees: int = Field(500, ge=1)
    min_child_samples: int = Field(20, ge=1)
    early_stopping: int = Field(30, ge=1, description="rounds without validation log-loss improvement")
    feature_fraction: float = Field(0.9, gt=0, le=1)
    seed: int = 0


class BoostedHeads:
    """One LightGBM binary model per head; columns named, category codes split as categories."""

    def __init__(self, config: BoostConfig | None = None) -> None:
        self.config = config or BoostConfig()

    def fit(self, values: np.ndarray, names: tuple[str, ...], labels: np.ndarray, valid: np.ndarray) -> BoostedHeads:
        """Fit both heads on the rows not in ``valid``, stopping early on the ``valid`` rows."""
        cfg = self.config
        params: dict[str, Any] = {
            "objective": "binary",
            "num_leaves": cfg.num_leaves,
            "learning_rate": cfg.learning_rate,
            "min_child_samples": cfg.min_child_samples,
            "feature_fraction": cfg.feature_fraction,
            "bagging_seed": cfg.seed,
            "feature_fraction_seed": cfg.seed,
            "seed": cfg.seed,
            "deterministic": True,
            "num_threads": 2,
            "verbose": -1,
        }
        categorical = [name for name in CATEGORICAL if name in names]
        self.boosters_: dict[str, lgb.Booster] = {}
        self.validation_: dict[str, dict[str, float]] = {}
        for index, head in enumerate(HEADS):
            y = labels[:, index]
            # Early stopping needs held-out rows of both classes; tiny data (a demo slice) trains a fixed
            # number of trees on everything instead, and says so with NaN validation scores.
            stoppable = bool(0 < y[valid].sum() < valid.sum())
            rows = ~valid if stoppable else np.ones(len(y), dtype=bool)
            train = lgb.Dataset(
                values[rows], y[rows], feature_name=list(names), categorical_feature=categorical, free_raw_data=False
            )
            if stoppable:
                held = lgb.Dataset(values[valid], y[valid], reference=train)
                stop: list[Any] = [lgb.early_stopping(cfg.early_stopping, verbose=False)]
                booster = lgb.train(params, train, cfg.max_trees, valid_sets=[held], callbacks=stop)
                self.validation_[head] = classification_metrics(y[valid], self._score_with(booster, values[valid]))
            else:
                booster = lgb.train(params, train, min(cfg.max_trees, FALLBACK_TREES))
                self.validation_[head] = {"auc": float("nan"), "logloss": float("nan"), "positives": float("nan")}
            self.boosters_[head] = booster
        return self

    def predict(self, values: np.ndarray) -> np.ndarray:
        """(pairs, 2) probabilities: attention, purchase."""
        self._check()
        return np.column_stack([self._predict_one(head, values) for head in HEADS])

    def contributions(self, values: np.ndarray, head: str) -> np.ndarray:
        """Path contributions in log-odds, (pairs, features + 1); the last column is the bias (root values)."""
        self._check()
        booster = self.boosters_[head]
        best = booster.best_iteration or None
        paths: dict[str, LeafPaths] = self.__dict__.setdefault("paths_", {})  # bundles older than paths_ lack it
        if head not in paths:
            paths[head] = LeafPaths(booster)
        leaves = np.asarray(booster.predict(values, num_iteration=best, pred_leaf=True, num_threads=_threads(values)))
        return paths[head].contributions(leaves.reshape(len(values), -1))

    def _predict_one(self, head: str, values: np.ndarray) -> np.ndarray:
        return self._score_with(self.boosters_[head], values)

    @staticmethod
    def _score_with(booster: lgb.Booster, values: np.ndarray) -> np.ndarray:
        best = booster.best_iteration or None  # 0 when trained without early stopping: use every tree
        return np.asarray(booster.predict(values, num_iteration=best, num_threads=_threads(values)), dtype=float)

    def _check(self) -> None:
        if not hasattr(self, "boosters_"):
            raise NotFitted("the ranker's heads are not fitted")


class LeafPaths:
    """Per leaf of every tree, what each feature's splits on the way to it added (Saabas attribution)."""

    def __init__(self, booster: lgb.Booster) -> None:
        trees = booster.dump_model(num_iteration=booster.best_iteration or None)["tree_info"]
        n_features = booster.num_feature()
        self.offsets = np.cumsum([0] + [tree["num_leaves"] for tree in trees])
        self.table = np.zeros((int(self.offsets[-1]), n_features + 1))
        for offset, tree in zip(self.offsets, trees, strict=False):
            root = tree["tree_structure"]
            start = np.zeros(n_features + 1)
            start[-1] = root.get("internal_value", root.get("leaf_value", 0.0))
            stack = [(root, start)]
            while stack:  # one walk per tree node, once per model
                node, credit = stack.pop()
                if "leaf_index" in node or "split_feature" not in node:
                    self.table[offset + node.get("leaf_index", 0)] = credit
                    continue
                here = node["internal_value"]
                for side in ("left_child", "right_child"):
                    child = node[side]
                    moved = credit.copy()
                    moved[node["split_feature"]] += child.get("internal_value", child.get("leaf_value", 0.0)) - here
                    stack.append((child, moved))

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """(pairs, features + 1) from (pairs, trees) leaf indices: a sparse pick-and-sum, no per-pair loop."""
        pairs, trees = leaves.shape
        columns = (leaves + self.offsets[:trees]).ravel()
        picks = sp.csr_matrix(
            (np.ones(pairs * trees), columns, np.arange(0, pairs * trees + 1, trees)), shape=(pairs, len(self.table))
        )
        summed: np.ndarray = picks @ self.table
        return summed


def _threads(values: np.ndarray) -> int:
    """One thread for a request's few hundred pairs (waking a thread pool costs more than it saves,
    and a server runs many requests at once); all cores (0) for offline batches."""
    return 1 if len(values) < 20_000 else 0


def classification_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """AUC (NaN when only one class is present) and log-loss of predicted probabilities."""
    clipped = np.clip(predicted, 1e-7, 1 - 1e-7)
    both = 0 < labels.sum() < len(labels)
    return {
        "auc": float(roc_auc_score(labels, clipped)) if both else float("nan"),
        "logloss": float(log_loss(labels, clipped, labels=[0, 1])),
        "positives": float(labels.mean()) if len(labels) else float("nan"),
        "rows": float(len(labels)),
    }
