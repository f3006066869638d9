"""A named recommendation pipeline: candidates → attention/purchase ranker → business rules → diversity → reasons.

Pipelines are TOML files (``<data_dir>/pipelines/<name>.toml``, or those bundled in
``shopsense/data/pipelines``; the built-in ``default`` needs no file). Everything a merchandiser tunes per
page or campaign (alpha, value, rules, diversity) can also be overridden per request without refitting: the
heads' probabilities are computed once per candidate and the blend, filters and re-ranking happen after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shopsense.domain import IdIndex
from shopsense.errors import ConfigError
from shopsense.features.interactions import Catalog, Interactions, Sequences, build_interactions
from shopsense.features.stats import type_mask
from shopsense.ranking.diversity import mmr
from shopsense.ranking.features import FeatureFrame
from shopsense.ranking.ranker import RankerConfig, Scored, TwoStage
from shopsense.ranking.reasons import Explanation, evidence_groups, explain
from shopsense.ranking.rules import PAD, RuleConfig, apply_rules
from shopsense.settings import explain_validation, read_toml


class DiversityConfig(BaseModel):
    """MMR re-ranking: ``lam`` 1 keeps the ranker's order, lower values trade accuracy for variety."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lam: float = Field(1.0, ge=0, le=1, description="relevance weight in maximal marginal relevance")
    pool: int = Field(50, ge=1, description="best candidates MMR chooses the k from")


class ChoiceConfig(BaseModel):
    """What training tries on a validation split before the final fit (:mod:`shopsense.eval.choice`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="false: fit the ranker exactly as configured")
    budget_seconds: float = Field(
        600.0, gt=0, description="wall-clock for the trials on 2 cores; a trial that would not fit is skipped"
    )
    validation_share: float = Field(
        0.1, gt=0, lt=1, description="train: the latest share of the events held out to validate on"
    )
    max_users: int = Field(5000, ge=10, description="validation users scored at most (a seeded sample)")


class PipelineConfig(BaseModel):
    """One named pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    k: int = Field(10, ge=1, le=1000)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    rules: RuleConfig = Field(default_factory=RuleConfig)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)
    choice: ChoiceConfig = Field(default_factory=ChoiceConfig)


def load_pipeline(name_or_path: str, directories: list[Path]) -> PipelineConfig:
    """A pipeline by file path or by name (``<dir>/<name>.toml``); ``default`` exists without a file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = next((d / f"{name_or_path}.toml" for d in directories if (d / f"{name_or_path}.toml").exists()), path)
    if not path.exists():
        if name_or_path == "default":
            return PipelineConfig()
        looked = ", ".join(str(d) for d in directories)
        raise ConfigError(f"pipeline {name_or_path!r} not found (looked in {looked})")
    values = read_toml(path, "pipeline file")
    values.setdefault("name", path.stem)
    try:
        return PipelineConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {explain_validation(exc)}") from exc


@dataclass(frozen=True)
class Recommendation:
    """One recommended item with its scores, where it came from and why."""

    item_id: str
    title: str
    score: float
    p_attention: float
    p_purchase: float
    value: float
    pinned: bool
    sources: tuple[str, ...]
    explanation: Explanation


class Pipeline:
    """Fits the two-stage ranker on interactions and answers requests with rules, diversity and reasons."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        self.ranker = TwoStage(self.config.ranker)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled bundle, its config re-validated so settings added since it was saved get their defaults.

        Pydantic restores a pickled model's fields as they were saved; a field added later would be
        missing altogether, and a bundle from an earlier release would fail on first use. Only the
        pipeline's own config (ranker, rules, diversity) is upgraded: the fitted parts (candidate
        models, heads) keep the configs they were fitted with, which is what they need to answer.
        """
        self.__dict__.update(state)
        self.config = PipelineConfig.model_validate(_plain(self.config))
        self.ranker.config = self.config.ranker

    def fit(self, data: Interactions) -> Pipeline:
        """Fit the ranker (candidate models, heads) on everything in ``data``."""
        self.ranker.fit(data)
        self.items_: IdIndex = data.items
        self.catalog_ = data.catalog if data.catalog is not None else Catalog.empty(len(data.items))
        assert data.sequences is not None  # the ranker's fit checked
        self.repeat_share_ = repeat_share(data.sequences, self.config.ranker.purchase_types)
        return self

    @property
    def rules(self) -> RuleConfig:
        """The pipeline's rules as they apply to this fitted model (``exclude_purchased = "auto"`` decided)."""
        return self.rules_for(None)

    def rules_for(self, overrides: Mapping[str, Any] | None) -> RuleConfig:
        """The rules with a request's overrides, then ``"auto"`` decided by this model's training data."""
        merged = self.config.rules.merged(overrides) if overrides else self.config.rules
        return merged.resolved(getattr(self, "repeat_share_", None))  # older bundles lack it

    def refresh_availability(self, items: pa.Table) -> bool:
        """Apply the catalogue's current ``available`` and ``stock`` to the fitted catalogue; True if any applied.

        The rules read availability from the catalogue the bundle was trained with, so a shelf
        change made since (``PUT /v1/items``, an items import) must reach it before answering.
        Rows of unknown items, and rows that state neither field, change nothing.
        """
        catalog = self.catalog_
        if catalog.available is None or "available" not in items.column_names or "stock" not in items.column_names:
            return False
        index = np.asarray(self.items_.index(items.column("item_id").to_pylist()))
        flags, stock = items.column("available"), items.column("stock")
        touched = (index >= 0) & (
            pc.is_valid(flags).to_numpy(zero_copy_only=False) | pc.is_valid(stock).to_numpy(zero_copy_only=False)
        )
        available = pc.fill_null(flags, True).to_numpy(zero_copy_only=False) & (
            pc.fill_null(stock, 1).to_numpy(zero_copy_only=False) > 0
        )
        catalog.available[index[touched]] = available[touched]
        return bool(touched.any())

    def forget_users(self, erased: Callable[[str], bool]) -> int:
        """Drop what a fitted candidate model keeps per training user (by id) for the users ``erased`` names,
        so the bundle answers for an erased user as for an unknown one; the per-user rows dropped.

        Only user-kNN keeps such rows; ALS and BPR keep no user factors, and the features and heads are
        fitted on aggregates. An erased user's events still shaped those aggregates until the next training,
        which no longer sees them.
        """
        dropped = 0
        for model in self.ranker.generator_.models_:
            forget = getattr(model, "forget_users", None)
            if forget is not None:
                dropped += int(forget(erased))
        return dropped

    def recommend_user(
        self,
        user_id: str,
        events: pa.Table,
        weights: dict[str, float],
        k: int | None = None,
        *,
        alpha: float | None = None,
        rules: Mapping[str, Any] | None = None,
        diversity: float | None = None,
    ) -> list[Recommendation]:
        """One live request: the user's events (any, possibly none), see :meth:`recommend_users`.

        Raises:
            ValueError: alpha, diversity or a rule override is out of range.
        """
        return self.recommend_users([user_id], events, weights, k, alpha=alpha, rules=rules, diversity=diversity)[0]

    def recommend_users(
        self,
        user_ids: list[str],
        events: pa.Table,
        weights: dict[str, float],
        k: int | None = None,
        *,
        alpha: float | None = None,
        rules: Mapping[str, Any] | None = None,
        diversity: float | None = None,
    ) -> list[list[Recommendation]]:
        """Answers for users from their events (``events`` holds theirs, any number), on this pipeline's
        item index, ranked at the later of the training data's end and the newest of these events, so
        time features never count from before what the model has seen. One user at a time is the live
        request; many at once is how a bundle precomputes its answers, and gives the same lists.

        Raises:
            ValueError: alpha, diversity or a rule override is out of range.
        """
        end = self.ranker.features_.as_of_
        if events.num_rows:
            end = max(end, int(pc.max(events.column("timestamp")).as_py().timestamp()))
        history = build_interactions(
            events,
            weights,
            items=self.items_,
            catalog=self.catalog_,
            users=IdIndex(user_ids),
            as_of=datetime.fromtimestamp(end, UTC),
        )
        return self.recommend(history, k, alpha=alpha, rules=rules, diversity=diversity)

    def similar(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """Items related to one item ("customers also bought"), from the first candidate source that
        models item-to-item relations: co-occurrence first, then factors, never plain popularity.

        The pipeline's item rules apply (availability, excluded kinds and categories, variants), so a
        "often bought with" list never shows postage or an item off the shelf; a few times ``k``
        neighbours are fetched so the list refills after the filters.

        Raises:
            KeyError: the item is not in this pipeline's vocabulary.
        """
        index = self.items_.index([item_id])[0]
        if index < 0:
            raise KeyError(item_id)
        # Each source model's class says whether and how early it answers (``similar_items_rank``).
        answering = [model for model in self.ranker.generator_.models_ if model.similar_items_rank is not None]
        best = min(answering, key=lambda model: model.similar_items_rank or 0, default=None)  # first of equals
        if best is None:
            return []
        related = best.similar_items(np.array([index]), 4 * k + 10)
        rules = self.rules.model_copy(update={"exclude_purchased": False, "boosts": (), "pins": ()})
        valid = related.items >= 0
        kept = apply_rules(
            np.where(valid, related.items, PAD),
            np.where(valid, related.scores, 0.0),
            k,
            config=rules,
            catalog=self.catalog_,
            item_ids=self.items_,
        )
        keep = kept.items[0] >= 0
        return [
            (self.items_.values[i], float(v)) for i, v in zip(kept.items[0][keep], kept.scores[0][keep], strict=True)
        ]

    def recommend(
        self,
        history: Interactions,
        k: int | None = None,
        *,
        alpha: float | None = None,
        rules: Mapping[str, Any] | None = None,
        diversity: float | None = None,
    ) -> list[list[Recommendation]]:
        """Recommendations for each user row of ``history`` (built on this pipeline's item index)."""
        cfg = self.config
        k = cfg.k if k is None else k
        alpha = cfg.ranker.fusion.alpha if alpha is None else alpha
        lam = cfg.diversity.lam if diversity is None else diversity
        if not (0 <= alpha <= 1 and 0 <= lam <= 1):
            raise ValueError(f"alpha and diversity must be within [0, 1], got alpha={alpha}, diversity={lam}")
        rule_config = self.rules_for(rules)
        scored = self.ranker.score_candidates(history)
        candidates = scored.candidates
        scores = np.full(candidates.items.shape, -np.inf)
        fused = scored.fused(alpha)
        scores[candidates.items >= 0] = fused
        catalog = self.catalog_
        purchased = self._purchased(history)
        shared = {"catalog": catalog, "item_ids": self.items_, "purchased": purchased}
        pool = max(k, cfg.diversity.pool) if lam < 1 else k
        kept = apply_rules(candidates.items, scores, pool, config=rule_config.model_copy(update={"pins": ()}), **shared)
        items = mmr(kept.items, kept.scores, k, lam, category=catalog.category)[0] if lam < 1 else kept.items[:, :k]
        pinned = np.zeros(items.shape, dtype=bool)
        if rule_config.pins:
            # Pins go in last, at their positions, over the final order (rank stands in for the score).
            order = np.where(items >= 0, np.arange(k, 0, -1, dtype=float), -np.inf)
            placed = apply_rules(items, order, k, config=rule_config.model_copy(update={"boosts": ()}), **shared)
            items, pinned = placed.items, placed.pinned
        return self._assemble(scored, fused, items, pinned, alpha, purchased)

    def _assemble(
        self,
        scored: Scored,
        fused: np.ndarray,
        items: np.ndarray,
        pinned: np.ndarray,
        alpha: float,
        purchased: sp.csr_matrix,
    ) -> list[list[Recommendation]]:
        """Look each chosen pair up in the scored candidates and attach its sources and explanation."""
        frame, candidates = scored.frame, scored.candidates
        n_items = len(self.items_)
        keys = frame.users.astype(np.int64) * n_items + frame.items
        rows = np.broadcast_to(np.arange(items.shape[0])[:, None], items.shape)
        wanted = rows.astype(np.int64) * n_items + np.maximum(items, 0)
        at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        found = (items >= 0) & (len(keys) > 0) & (keys[at] == wanted if len(keys) else False)
        lookup = iter(self._explanations(frame, at[found], alpha, purchased))
        cand_rows, cand_cols = np.nonzero(candidates.items >= 0)
        item_ids, titles = self.items_.values, self.catalog_.titles or ("",) * len(self.items_)
        out: list[list[Recommendation]] = []
        for row in range(items.shape[0]):
            recs = []
            for col in range(items.shape[1]):
                item = int(items[row, col])
                if item < 0:
                    continue
                if found[row, col]:
                    p = int(at[row, col])
                    ranks = candidates.ranks[cand_rows[p], cand_cols[p]]
                    sources = tuple(name for name, r in zip(candidates.sources, ranks, strict=True) if r == r)
                    probs = scored.probabilities[p]
                    recs.append(
                        Recommendation(
                            item_ids[item],
                            titles[item],
                            float(fused[p]),
                            float(probs[0]),
                            float(probs[1]),
                            float(scored.value[p]),
                            bool(pinned[row, col]),
                            sources,
                            next(lookup),
                        )
                    )
                else:
                    promoted = Explanation("Promoted", "pinned", None, {})
                    recs.append(
                        Recommendation(
                            item_ids[item],
                            titles[item],
                            float("nan"),
                            float("nan"),
                            float("nan"),
                            1.0,
                            True,
                            (),
                            promoted,
                        )
                    )
            out.append(recs)
        return out

    def _explanations(
        self, frame: FeatureFrame, rows: np.ndarray, alpha: float, purchased: sp.csr_matrix
    ) -> list[Explanation]:
        if not len(rows):  # e.g. a category filter no candidate passes
            return []
        boosted = self.ranker.boosted_
        values = frame.values[rows]
        blended = (
            alpha * boosted.contributions(values, "attention")[:, :-1]
            + (1 - alpha) * boosted.contributions(values, "purchase")[:, :-1]
        )
        models = {source.name: source.model for source in self.config.ranker.candidates.sources}
        catalog = self.catalog_
        return explain(
            frame,
            rows,
            blended,
            evidence_groups(frame.names, models),
            catalog,
            self.items_.values,
            catalog.titles,
            nameable=self._shown_kinds(),
        )

    def _shown_kinds(self) -> np.ndarray | None:
        """Per item, False where its kind is excluded from recommendations (a reason must not name it either)."""
        kind, excluded = getattr(self.catalog_, "kind", None), self.config.rules.exclude_kinds
        if kind is None or not excluded:
            return None
        hidden = np.array([name in excluded for name in self.catalog_.kinds] + [False])
        shown: np.ndarray = ~hidden[kind]
        return shown

    def _purchased(self, history: Interactions) -> sp.csr_matrix:
        """Users x items: >0 where the user bought the item (rules exclude these unless repeatable)."""
        seq = history.sequences
        assert seq is not None
        bought = type_mask(seq, self.config.ranker.purchase_types)
        return sp.csr_matrix(
            (np.ones(int(bought.sum())), (seq.owners()[bought], seq.items[bought])), shape=history.matrix.shape
        )


def repeat_share(seq: Sequences, purchase_types: tuple[str, ...]) -> float | None:
    """The share of purchases that re-buy an item the same shopper bought at an earlier time (None: no purchases).

    Lines of one basket share a time, so buying two of a thing at once is not a repeat.
    """
    bought = type_mask(seq, purchase_types)
    if not bought.any():
        return None
    users, items, times = seq.owners()[bought], seq.items[bought], seq.times[bought]
    order = np.lexsort((times, items, users))
    users, items, times = users[order], items[order], times[order]
    same_pair = (users[1:] == users[:-1]) & (items[1:] == items[:-1])
    first = np.ones(len(users), dtype=bool)
    first[1:] = ~same_pair
    first_time = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
    repeats = times > times[first_time]
    return float(repeats.mean())


def _plain(value: Any) -> Any:
    """A config as plain data, read from what each model instance holds (not from its current fields)."""
    if isinstance(value, BaseModel):
        return {name: _plain(field) for name, field in value.__dict__.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
