"""The gradient-boosted heads: P(attention) and P(purchase) per (user, candidate) pair, with LightGBM.

Two models on the same pair features: attention (the user will view, click, cart or buy the
item in the next window) and purchase (will buy it). With ``objective = "binary"`` each is a
classifier that stops early on held-out users' log-loss; with ``"lambdarank"`` each is a ranker
that learns the order of one user's candidates (a LightGBM query group per user) and stops early
on held-out users' NDCG@10. Either way the number of trees is chosen without looking at the test
window.

Why one ranker per head and Platt scaling: fusion blends ``alpha·P(attention) +
(1-alpha)·P(purchase)·value``, which needs two *probabilities*: a lambdarank score has no scale
(only its order within a user means anything), so adding it to another head's score or
multiplying it by a price would weigh the heads by accident. One graded ranker (purchase >
attention > none) would leave nothing for alpha to trade. Rank-normalising per user would make
the blend depend on how many candidates a user has and lose how sure the head is. So each
lambdarank head is followed by a logistic map ``sigmoid(a·score + b)`` fitted on the held-out
users' rows (the training rows' scores are overfitted), with ``a > 0``: monotone, so the
within-user order the ranker learned is kept exactly, while the blend, the value term and the
log-loss comparison with the DIN head get the probability scale they assume. A binary head's
map is the identity on its log-odds (``a = 1, b = 0``), so both objectives share one predict path.

Path contributions say why a pair scored high, and the explanations are built from
them: each split on a pair's way down a tree credits its feature with the change in the node's
value (Saabas), so a feature's contributions plus the trees' root values add up exactly to the
log-odds (a lambdarank head's through its logistic map, linear in the raw score). Each leaf's
vector is computed once per model, so a pair's contributions are one leaf lookup per tree, where
exact TreeSHAP (LightGBM's ``pred_contrib``) costs more than the rest of a recommendation.
"""

from __future__ import annotations

from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from shopsense.models.base import NotFitted
from shopsense.ranking.features import CATEGORICAL

HEADS = ("attention", "purchase")
OBJECTIVES = ("binary", "lambdarank")
"""The objectives a head can be trained with; ``auto`` in :class:`BoostConfig` fits both (see the ranker)."""
RANK_AT = 10
"""The cut-off of the NDCG lambdarank optimises and stops early on, the one recommendations are judged at."""
FALLBACK_TREES = 50
"""Trees fitted without early stopping when too few held-out rows exist to stop on."""


class BoostConfig(BaseModel):
    """LightGBM settings shared by both heads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_trees: int = Field(500, ge=1)
    min_child_samples: int = Field(20, ge=1)
    early_stopping: int = Field(
        30, ge=1, description="rounds without validation improvement (log-loss; NDCG@10 for lambdarank)"
    )
    feature_fraction: float = Field(0.9, gt=0, le=1)
    objective: Literal["binary", "lambdarank", "auto"] = Field(
        "binary",
        description="binary: one classifier per head (the default: neither objective won on every dataset and "
        "validation did not predict which would, see benchmarks/results/ranking-objective.md); lambdarank: one "
        "ranker per head over each user's candidates, its score mapped to a probability on held-out users; auto: "
        "fit both on the same users, keep lambdarank only if its blend ranks the held-out users' purchases "
        "measurably better (NDCG@10, by two standard errors)",
    )
    seed: int = 0


class BoostedHeads:
    """One LightGBM model per head (binary or lambdarank); columns named, category codes split as categories."""

    def __init__(self, config: BoostConfig | None = None) -> None:
        self.config = config or BoostConfig()

    def fit(
        self,
        values: np.ndarray,
        names: tuple[str, ...],
        labels: np.ndarray,
        valid: np.ndarray,
        groups: np.ndarray | None = None,
    ) -> BoostedHeads:
        """Fit both heads on the rows not in ``valid``, stopping early on the ``valid`` rows.

        Args:
            values: (pairs, features) pair features.
            names: the feature names, one per column.
            labels: (pairs, 2) 0/1 [attention, purchase].
            valid: mask of the held-out users' rows.
            groups: each row's user, required by lambdarank (a query group per user); rows need not
                be contiguous, they are ordered by user here.

        Returns:
            self, with ``boosters_``, ``calibration_`` and ``validation_`` (AUC and log-loss on ``valid``).
        """
        cfg = self.config
        if cfg.objective not in OBJECTIVES:
            raise ValueError(
                f"objective {cfg.objective!r}: fit one BoostedHeads per objective (the ranker does for auto)"
            )
        ranking = cfg.objective == "lambdarank"
        if ranking and (groups is None or len(groups) != len(values)):
            raise ValueError("lambdarank needs each row's user (groups) to form its query groups")
        params: dict[str, Any] = {
            "objective": cfg.objective,
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
        if ranking:
            params |= {"metric": "ndcg", "eval_at": [RANK_AT]}
        categorical = [name for name in CATEGORICAL if name in names]
        self.objective_ = cfg.objective
        self.boosters_: dict[str, lgb.Booster] = {}
        self.calibration_: dict[str, tuple[float, float]] = {}
        self.validation_: dict[str, dict[str, float]] = {}
        for index, head in enumerate(HEADS):
            y = labels[:, index]
            # Early stopping needs held-out rows of both classes; tiny data (a demo slice) trains a fixed
            # number of trees on everything instead, and says so with NaN validation scores.
            stoppable = bool(0 < y[valid].sum() < valid.sum())
            rows = ~valid if stoppable else np.ones(len(y), dtype=bool)
            train_at, train_groups = grouped_rows(rows, groups) if ranking else (np.flatnonzero(rows), None)
            train = lgb.Dataset(
                values[train_at],
                y[train_at],
                group=train_groups,
                feature_name=list(names),
                categorical_feature=categorical,
                free_raw_data=False,
            )
            if stoppable:
                held_at, held_groups = grouped_rows(valid, groups) if ranking else (np.flatnonzero(valid), None)
                held = lgb.Dataset(values[held_at], y[held_at], group=held_groups, reference=train)
                stop: list[Any] = [lgb.early_stopping(cfg.early_stopping, first_metric_only=True, verbose=False)]
                booster = lgb.train(params, train, cfg.max_trees, valid_sets=[held], callbacks=stop)
            else:
                booster = lgb.train(params, train, min(cfg.max_trees, FALLBACK_TREES))
            self.boosters_[head] = booster
            if ranking:  # on held-out rows where there are both classes; else on what it trained on
                fit_at = valid if stoppable else rows
                self.calibration_[head] = platt(_raw(booster, values[fit_at]), y[fit_at])
            if stoppable:
                self.validation_[head] = classification_metrics(y[valid], self._predict_one(head, values[valid]))
            else:
                self.validation_[head] = {"auc": float("nan"), "logloss": float("nan"), "positives": float("nan")}
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
        raw = paths[head].contributions(leaves.reshape(len(values), -1))
        slope, intercept = self._calibration(head)
        if slope == 1.0 and intercept == 0.0:
            return raw
        scaled: np.ndarray = raw * slope
        scaled[:, -1] += intercept
        return scaled

    def _predict_one(self, head: str, values: np.ndarray) -> np.ndarray:
        slope, intercept = self._calibration(head)
        probability: np.ndarray = expit(slope * _raw(self.boosters_[head], values) + intercept)
        return probability

    def _calibration(self, head: str) -> tuple[float, float]:
        """The head's logistic map of its raw score; the identity on a binary head's log-odds."""
        maps: dict[str, tuple[float, float]] = getattr(self, "calibration_", {})  # older bundles lack it
        return maps.get(head, (1.0, 0.0))

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


def grouped_rows(mask: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows in ``mask`` ordered so each group's rows are contiguous, and each group's size, in that order.

    LightGBM reads a ranking dataset as consecutive runs of ``group`` sizes, so a user's pairs
    must sit together; the sort is stable, so within a user the rows keep their order.
    """
    assert groups is not None
    at = np.flatnonzero(mask)
    at = at[np.argsort(groups[at], kind="stable")]
    _, sizes = np.unique(groups[at], return_counts=True)
    return at, sizes


def platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) of ``P(y = 1) = sigmoid(a·score + b)``, with ``a > 0`` so the map keeps the scores' order.

    With one class only, or scores that do not rise with the label, the map is (almost) flat at
    the base rate: a head that learned nothing says so with its probabilities instead of inverting.
    """
    rate = float(np.clip(labels.mean(), 1e-6, 1 - 1e-6)) if len(labels) else 0.5
    flat = (1e-6, float(np.log(rate / (1 - rate))))
    if not 0 < labels.sum() < len(labels):
        return flat
    fitted = LogisticRegression(C=1e4).fit(scores.reshape(-1, 1), labels)
    slope = float(fitted.coef_[0, 0])
    return (slope, float(fitted.intercept_[0])) if slope > 1e-6 else flat


def _raw(booster: lgb.Booster, values: np.ndarray) -> np.ndarray:
    """The booster's raw score (log-odds for binary), from its early-stopped trees."""
    best = booster.best_iteration or None  # 0 when trained without early stopping: use every tree
    return np.asarray(
        booster.predict(values, num_iteration=best, raw_score=True, num_threads=_threads(values)), dtype=float
    )


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
