"""The two-stage recommender: candidate sources, then attention and purchase heads, then fusion.

Training never sees its own future. With training data ending at T, the label window is
``[T - delta, T)``: candidate models and pair features are fitted on the events before ``T - delta``
only, and the labels are what each user then viewed or bought in the window. Where the task is
not "what happens next week" but "what does this session do next" (``label_mode = "last"``: each
user's last purchase-type events and what followed them) or a random share of pairs
(``"random"``), the labels are cut the same way, so the heads learn the task they are judged on. The heads learn
from a sample of the window's users and stop early on held-out users; when both the LightGBM
and the DIN head are asked for (``head = "auto"``) the one with the lower validation log-loss
ranks, and both results are kept in :attr:`TwoStage.heads_report_`. The LightGBM heads' objective is
chosen the same way (``boost.objective = "auto"``: binary classifiers and lambdarank rankers fitted
on the same users; lambdarank takes binary's place only if its blend ranks the held-out users'
purchases measurably better; ``heads_report_["objective"]``). If on those held-out users
one candidate source alone orders the candidates better than the heads do, the ranker ranks by
that source and the heads only break its ties (``rank_by_``; reported), so a label window too thin
to learn from cannot bury good candidates. Finally the candidate
models and item statistics are refitted on everything before T, the state requests are
answered from.

The model keeps the shared :class:`~shopsense.models.base.Recommender` contract (its score for
a non-candidate is -inf), so the evaluation harness measures it exactly like a single model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopsense.features.interactions import Interactions, Sequences
from shopsense.features.stats import DAY, type_mask
from shopsense.models.base import NotFitted, Recommender
from shopsense.ranking.candidates import CandidateConfig, CandidateGenerator, Candidates
from shopsense.ranking.din import DINConfig, DINHead
from shopsense.ranking.features import FeatureFrame, PairFeatures
from shopsense.ranking.fusion import FusionConfig, fuse, item_value
from shopsense.ranking.heads import HEADS, OBJECTIVES, RANK_AT, BoostConfig, BoostedHeads, classification_metrics

log = logging.getLogger(__name__)
HEAD_MODELS = ("lightgbm", "din")
"""The models a head can be; their validation scores are keyed by these names in ``heads_report_``."""


class RankerConfig(BaseModel):
    """Candidate sources, label window, heads and fusion of the two-stage recommender."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: CandidateConfig = Field(default_factory=CandidateConfig)
    head: Literal["lightgbm", "din", "auto"] = Field(
        "lightgbm", description="auto: fit both, the one with the lower validation log-loss ranks"
    )
    attention_types: tuple[str, ...] = ("view", "click", "cart", "favourite")
    purchase_types: tuple[str, ...] = ("purchase",)
    label_mode: Literal["time", "last", "random"] = Field(
        "time",
        description="time: the last stretch of time; last: each user's last purchase-type events and what "
        "followed; random: a seeded share of (user, item) pairs",
    )
    label_days: float | None = Field(None, gt=0, description="time: window length; None: label_fraction")
    label_fraction: float = Field(
        0.15, gt=0, lt=1, description="time: the window's share of the events; random: share of pairs held out"
    )
    label_last: int = Field(1, ge=1, description="last: purchase-type events held out per user")
    rank_by: str | None = Field(
        None,
        min_length=1,
        description="a candidate source whose order ranks (the heads break its ties); None: such a source is "
        "chosen only when it orders the label window's held-out purchases better than the heads",
    )
    max_train_users: int = Field(10_000, ge=10, description="window users sampled to train the heads")
    valid_fraction: float = Field(0.2, gt=0, lt=1, description="share of those users held out for early stopping")
    history_length: int = Field(50, ge=1, description="recent events the DIN head attends over")
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    tune_alpha: bool = Field(
        False, description="rank with the alpha that best ranks held-out users' purchases instead of fusion.alpha"
    )
    boost: BoostConfig = Field(default_factory=BoostConfig)
    din: DINConfig = Field(default_factory=DINConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _known_rank_by(self) -> RankerConfig:
        names = [source.name for source in self.candidates.sources]
        if self.rank_by is not None and self.rank_by not in names:
            raise ValueError(f"rank_by {self.rank_by!r} is not a candidate source (sources: {', '.join(names)})")
        return self


@dataclass(frozen=True)
class TrainingExamples:
    """The heads' training pairs: features from the events before the labels, the labels, and whose they are.

    ``cut`` is the label window's start in time mode, the training end (plus one second) otherwise.
    """

    frame: FeatureFrame
    labels: np.ndarray
    users: np.ndarray
    history: Interactions
    cut: int


@dataclass(frozen=True)
class Scored:
    """Each candidate pair's features, [attention, purchase] probabilities and value."""

    candidates: Candidates
    frame: FeatureFrame
    probabilities: np.ndarray
    value: np.ndarray
    prior: np.ndarray | None = None

    def fused(self, alpha: float) -> np.ndarray:
        """The blended score; with a ``prior`` (a source's order, see ``TwoStage.rank_by_``) it only breaks ties."""
        fused = fuse(self.probabilities, self.value, alpha)
        if self.prior is None:
            return fused
        top = float(fused.max(initial=0.0))
        return self.prior + 0.999 * fused / top if top > 0 else self.prior + fused


class TwoStage(Recommender):
    """Candidates from several models, re-ranked by learned P(attention) and P(purchase), blended by alpha."""

    config: RankerConfig
    needs_sequences = True

    def __init__(self, config: RankerConfig | None = None) -> None:
        self.config = config or RankerConfig()

    def _fit(self, data: Interactions) -> None:
        log.info("fitting candidate sources on the events before the label window")
        examples = self.training_examples(data)
        cfg, frame, labels, users, history = (
            self.config,
            examples.frame,
            examples.labels,
            examples.users,
            examples.history,
        )
        seq, end = data.sequences, data.as_of
        assert seq is not None and end is not None  # training_examples checked
        self.type_names_ = seq.type_names
        rng = np.random.default_rng(cfg.seed)
        held = rng.random(len(users)) < cfg.valid_fraction
        if len(users) > 1 and not held.any():
            held[rng.integers(len(users))] = True
        valid = held[frame.users]
        log.info("training the heads on %s pairs of %s users", f"{len(labels):,}", f"{len(users):,}")
        self.heads_report_: dict[str, Any] = {}
        self.boosted_ = self._fit_boosted(frame, labels, valid)
        self.heads_report_["lightgbm"] = self.boosted_.validation_
        self.din_: DINHead | None = None
        if cfg.head in ("din", "auto"):
            recent, types = recent_events(history.sequences, cfg.history_length, seq.type_names)
            din = DINHead(cfg.din).fit(
                frame.values,
                frame.items,
                frame.users,
                recent,
                types,
                labels,
                n_items=self.n_items_,
                n_types=len(seq.type_names),
                valid=valid,
            )
            predicted = din.predict(frame.values[valid], frame.items[valid], frame.users[valid], recent, types)
            self.heads_report_["din"] = {
                head: classification_metrics(labels[valid, i], predicted[:, i]) for i, head in enumerate(HEADS)
            }
            self.din_ = din
        self.head_ = cfg.head if cfg.head != "auto" else self._better_head()
        self.heads_report_["chosen"] = self.head_
        if valid.any():
            if self.head_ == "din" and self.din_ is not None:
                held = predicted
            else:
                held = self.boosted_.predict(frame.values[valid])
            self.heads_report_["purchase_ndcg_by_alpha"] = alpha_curve(frame.users[valid], held, labels[valid, 1])
        self.alpha_ = self._alpha()
        self.rank_by_ = self._rank_by(frame, labels, valid, held if valid.any() else None)
        self.training_ = {
            "label_mode": cfg.label_mode,
            "label_window": [examples.cut, end],
            "users": len(users),
            "pairs": len(labels),
            "positive_attention": int(labels[:, 0].sum()),
            "positive_purchase": int(labels[:, 1].sum()),
            "feature_names": list(frame.names),
            "alpha": self.alpha_,
            "rank_by": self.rank_by_,
            "objective": self.boosted_.objective_,
        }
        log.info("refitting candidate sources on every event")
        full = data.window(None, end + 1)
        self.generator_ = CandidateGenerator(cfg.candidates).fit(full)
        self.features_ = PairFeatures(cfg.purchase_types).fit(full)
        self.value_ = item_value(data.catalog, self.n_items_, cfg.fusion)

    def training_examples(self, data: Interactions) -> TrainingExamples:
        """Pairs to learn from: candidates and features at the cut, labels from the window after it."""
        seq, end = data.sequences, data.as_of
        if seq is None or end is None or not len(seq.times):
            raise ValueError("the two-stage ranker needs timed event sequences")
        cfg = self.config
        labelled, cut = self._holdout(seq, end)
        past, window = data.select(~labelled, cut), data.select(labelled, end + 1)
        assert window.sequences is not None and past.sequences is not None  # select() keeps the sequences
        users = self._window_users(window.sequences, past.sequences)
        generator = CandidateGenerator(cfg.candidates).fit(past)
        features = PairFeatures(cfg.purchase_types).fit(past)
        history = past.rows(users)
        frame = features.build(history, generator.generate(history))
        labels = pair_labels(window.sequences.rows(users), frame.users, frame.items, cfg)
        if labels[:, 1].sum() == 0 or labels[:, 0].sum() == 0:
            raise ValueError("no candidate in the label window was viewed or bought: nothing to learn from")
        return TrainingExamples(frame, labels, users, history, cut)

    def _holdout(self, seq: Sequences, end: int) -> tuple[np.ndarray, int]:
        """Which events are labels (a mask over ``seq``), and the time the rest is measured at."""
        cfg = self.config
        if cfg.label_mode == "last":
            return last_events(seq, type_mask(seq, cfg.purchase_types), cfg.label_last), end + 1
        if cfg.label_mode == "random":
            n_items = int(seq.items.max(initial=0)) + 1
            _, pair = np.unique(seq.owners().astype(np.int64) * n_items + seq.items, return_inverse=True)
            drawn = np.random.default_rng(cfg.seed).random(int(pair.max(initial=-1)) + 1) < cfg.label_fraction
            return drawn[pair.ravel()], end + 1
        if cfg.label_days is not None:
            cut = int(end - cfg.label_days * DAY)
        else:  # by event count, so a few late stragglers (returns) do not stretch the window
            cut = int(np.quantile(seq.times, 1 - cfg.label_fraction))
        if cut <= int(seq.times.min()):
            raise ValueError("the training data spans too little time to cut a label window from it")
        return seq.times >= cut, cut

    def _window_users(self, window: Sequences, past: Sequences) -> np.ndarray:
        """Users who did anything the heads predict in the label window, a seeded sample if too many.

        Outside time mode only users with history before their labels count: the evaluation
        such holdouts mirror scores users without history apart, as cold start.
        """
        cfg = self.config
        active = type_mask(window, (*cfg.attention_types, *cfg.purchase_types))
        users = np.unique(window.owners()[active])
        if cfg.label_mode != "time":
            users = users[np.diff(past.indptr)[users] > 0]
        if len(users) > cfg.max_train_users:
            users = np.sort(np.random.default_rng(cfg.seed).choice(users, cfg.max_train_users, replace=False))
        if not len(users):
            raise ValueError("nobody viewed or bought anything in the label window")
        return users

    def _fit_boosted(self, frame: FeatureFrame, labels: np.ndarray, valid: np.ndarray) -> BoostedHeads:
        """The LightGBM heads with the configured objective, or with ``auto`` the better of both on validation.

        Both objectives train on the same users and stop on the same held-out users, whose
        candidates then decide: lambdarank replaces binary only if its blend ranks their purchases
        better (NDCG@10 at the alpha the ranker will use, the best of the grid with ``tune_alpha``)
        by more than :data:`SURE` standard errors of the per-user difference. A few hundred
        held-out users measure NDCG@10 to about ±0.01, and a gain smaller than that is noise: on
        Online Retail lambdarank won validation by 0.0007 and then lost the test by 0.011
        (``benchmarks/results/ranking-objective.md``). Binary also stays on a tie or where nothing
        could be measured. Each objective's scores (and the challenger's ``gain_se``) and the
        choice are in ``heads_report_["objective"]``, beside the head comparison they mirror.
        """
        cfg = self.config
        names = OBJECTIVES if cfg.boost.objective == "auto" else (cfg.boost.objective,)
        fitted = {
            name: BoostedHeads(cfg.boost.model_copy(update={"objective": name})).fit(
                frame.values, frame.names, labels, valid, groups=frame.users
            )
            for name in names
        }
        report: dict[str, Any] = {}
        per_user: dict[str, np.ndarray] = {}
        if valid.any():
            users, held_labels = frame.users[valid], labels[valid]
            for name, heads in fitted.items():
                held = heads.predict(frame.values[valid])
                report[name] = ranking_scores(users, held, held_labels, self._alpha_grid())
                blend = fuse(held, np.ones(len(held)), report[name]["alpha"])
                per_user[name] = user_ndcg(users, blend, held_labels[:, 1], RANK_AT)
        default, margins = names[0], {}
        for name in [name for name in per_user if name != default]:
            report[name]["gain_se"] = paired_se(per_user[name], per_user[default])
            margins[name] = SURE * report[name]["gain_se"]
        ranked = {name: scores["ranked_ndcg@10"] for name, scores in report.items()}
        chosen = better(ranked, default=default, lower=False, margins=margins)
        self.heads_report_["objective"] = {**report, "chosen": chosen}
        return fitted[chosen]

    def _alpha_grid(self) -> tuple[float, ...]:
        """The alphas the ranker may rank with: the configured one, or the tuning grid."""
        return ALPHA_GRID if self.config.tune_alpha else (self.config.fusion.alpha,)

    def _alpha(self) -> float:
        """fusion.alpha, or with tune_alpha the validation curve's best (ties: less attention)."""
        curve = self.heads_report_.get("purchase_ndcg_by_alpha")
        if not self.config.tune_alpha or not curve or all(np.isnan(v) for v in curve.values()):
            return self.config.fusion.alpha
        return float(max(curve, key=lambda alpha: (np.nan_to_num(curve[alpha], nan=-1.0), -float(alpha))))

    def _rank_by(
        self, frame: FeatureFrame, labels: np.ndarray, valid: np.ndarray, held: np.ndarray | None
    ) -> str | None:
        """A candidate source that alone orders held-out users' purchases better than the heads, else None.

        ``rank_by`` in the config (set by :mod:`shopsense.eval.choice` when a source beat the pipeline on
        its validation split) decides instead; the comparison is still reported.
        """
        if held is None:
            return None
        users, bought = frame.users[valid], labels[valid, 1]
        heads = grouped_ndcg(users, fuse(held, np.ones(len(held)), self.alpha_), bought)
        report: dict[str, float] = {"heads": heads}
        for name in frame.sources:
            rank = frame.source_rank(name)[valid]
            report[name] = grouped_ndcg(users, np.where(np.isnan(rank), -np.inf, -rank), bought)
        self.heads_report_["purchase_ndcg_by_order"] = report
        if self.config.rank_by is not None:
            return self.config.rank_by
        best = max(frame.sources, key=lambda name: np.nan_to_num(report[name], nan=-1.0), default=None)
        if best is None or not np.nan_to_num(report[best], nan=-1.0) > np.nan_to_num(heads, nan=-1.0):
            return None
        return best

    def _better_head(self) -> str:
        """The head with the lower mean validation log-loss over attention and purchase."""
        report = self.heads_report_
        losses = {
            name: float(np.mean([report[name][head]["logloss"] for head in HEADS]))
            for name in HEAD_MODELS
            if name in report
        }
        return better(losses, default="lightgbm", lower=True)

    def score_candidates(self, history: Interactions, exclude: sp.csr_matrix | None = None) -> Scored:
        """Candidates of each user row of ``history`` with their features, probabilities and value."""
        if not hasattr(self, "generator_"):
            raise NotFitted("TwoStage is not fitted: call fit() before scoring")
        end = (history.as_of if history.as_of is not None else self.features_.as_of_) + 1
        current = history.window(None, end)
        candidates = self.generator_.generate(current, exclude=exclude)
        frame = self.features_.build(current, candidates)
        if self.head_ == "din" and self.din_ is not None:
            recent, types = recent_events(current.sequences, self.config.history_length, self.type_names_)
            probabilities = self.din_.predict(frame.values, frame.items, frame.users, recent, types)
        else:
            probabilities = self.boosted_.predict(frame.values)
        prior, rank_by = None, getattr(self, "rank_by_", None)  # bundles saved before rank_by_ existed lack it
        if rank_by is not None:
            rank = frame.source_rank(rank_by)
            prior = np.where(np.isnan(rank), 0.0, float(np.nanmax(rank, initial=0.0)) + 1.0 - rank)
        return Scored(candidates, frame, probabilities, self.value_[frame.items], prior)

    def _score_for(self, history: Interactions, exclude: sp.csr_matrix | None) -> np.ndarray:
        scored = self.score_candidates(history, exclude)
        scores = np.full(history.matrix.shape, -np.inf)
        scores[scored.frame.users, scored.frame.items] = scored.fused(self.alpha_)
        return scores

    def _score(self, history: Interactions) -> np.ndarray:
        return self._score_for(history, None)


ALPHA_GRID = tuple(round(0.1 * step, 1) for step in range(11))
SURE = 2.0
"""Standard errors of the per-user difference by which a challenger must beat the default objective's NDCG@10."""


def better(scores: dict[str, float], default: str, lower: bool, margins: dict[str, float] | None = None) -> str:
    """The name whose validation score beats ``default``'s (by more than its margin) and every other's.

    One rule for every "fit both, keep what validation prefers" choice (DIN vs LightGBM, binary vs
    lambdarank; ``lower``: the score is a loss): the default keeps its place unless another is
    measurably better, so a tie, a gain within the challenger's ``margins`` (noise), a NaN
    (nothing held out to measure on) or a missing default keeps it. Only the best challenger is
    weighed against the default.
    """
    sign = -1.0 if lower else 1.0

    def key(name: str) -> float:
        value = scores.get(name, float("nan"))
        return -np.inf if np.isnan(value) else sign * value

    best = max(scores, key=key, default=default)
    margin = (margins or {}).get(best, 0.0)
    return best if np.isfinite(key(default)) and key(best) - key(default) > margin else default


def paired_se(challenger: np.ndarray, default: np.ndarray) -> float:
    """Standard error of the mean per-user difference of two scorings of the same users (inf under two users)."""
    if len(challenger) < 2:
        return float("inf")
    return float(np.std(challenger - default, ddof=1) / np.sqrt(len(challenger)))


def ranking_scores(
    users: np.ndarray, probabilities: np.ndarray, labels: np.ndarray, alphas: tuple[float, ...]
) -> dict[str, float]:
    """How one pair of heads orders held-out users' candidates, NDCG@10 (no value term).

    ``attention_ndcg@10`` and ``purchase_ndcg@10``: each head by its own label;
    ``ranked_ndcg@10``: purchases ranked by the blend, at ``alpha``, the best of ``alphas`` (what
    the ranker ranks by, and what an objective is chosen on; ties: the first). NaN where no
    held-out user has a positive.
    """
    blends = [
        grouped_ndcg(users, fuse(probabilities, np.ones(len(users)), alpha), labels[:, 1], RANK_AT) for alpha in alphas
    ]
    best = int(np.argmax(np.nan_to_num(blends, nan=-1.0)))
    return {
        "attention_ndcg@10": grouped_ndcg(users, probabilities[:, 0], labels[:, 0], RANK_AT),
        "purchase_ndcg@10": grouped_ndcg(users, probabilities[:, 1], labels[:, 1], RANK_AT),
        "ranked_ndcg@10": blends[best],
        "alpha": float(alphas[best]),
    }


def alpha_curve(users: np.ndarray, probabilities: np.ndarray, bought: np.ndarray) -> dict[str, float]:
    """Validation purchase-NDCG@10 within the candidates for each alpha (no value term).

    Purchases are rare and the attention head learns from many more positives, so some attention
    in the blend often ranks purchases better than P(purchase) alone; this curve shows how much,
    on held-out users, so alpha can be chosen without looking at the test period.
    """
    return {
        f"{alpha:.1f}": grouped_ndcg(users, alpha * probabilities[:, 0] + (1 - alpha) * probabilities[:, 1], bought)
        for alpha in ALPHA_GRID
    }


def grouped_ndcg(users: np.ndarray, scores: np.ndarray, relevant: np.ndarray, k: int = 10) -> float:
    """Mean binary NDCG@k over users with at least one relevant pair; pairs ranked by score within each user."""
    per_user = user_ndcg(users, scores, relevant, k)
    return float(per_user.mean()) if len(per_user) else float("nan")


def user_ndcg(users: np.ndarray, scores: np.ndarray, relevant: np.ndarray, k: int = 10) -> np.ndarray:
    """Binary NDCG@k of each user with at least one relevant pair, in user order (the same users for any scores)."""
    order = np.lexsort((-scores, users))
    users, relevant = users[order], relevant[order] > 0
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    rank = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    gain = np.where(relevant & (rank < k), 1.0 / np.log2(rank + 2.0), 0.0)
    dcg = np.add.reduceat(gain, starts) if len(users) else np.zeros(0)
    positives = np.add.reduceat(relevant.astype(int), starts) if len(users) else np.zeros(0, dtype=int)
    best = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))]  # ideal DCG with n relevant, n <= k
    ideal = best[np.minimum(positives, k)]
    scored = positives > 0
    per_user: np.ndarray = dcg[scored] / ideal[scored]
    return per_user


def pair_labels(window: Sequences | None, users: np.ndarray, items: np.ndarray, config: RankerConfig) -> np.ndarray:
    """(pairs, 2) 0/1: did the user engage with (attention) or buy (purchase) the item in the window.

    A purchase counts as attention too: nobody buys what they did not look at.
    """
    assert window is not None
    n_items = int(max(items.max(initial=0), window.items.max(initial=0))) + 1
    keys = users.astype(np.int64) * n_items + items
    owners = window.owners().astype(np.int64) * n_items + window.items
    bought = type_mask(window, config.purchase_types)
    engaged = bought | type_mask(window, config.attention_types)
    return np.column_stack([np.isin(keys, owners[engaged]), np.isin(keys, owners[bought])]).astype(float)


def last_events(seq: Sequences, targets: np.ndarray, k: int) -> np.ndarray:
    """Mask of each user's events from their k-th last ``targets`` event on (the leave-last-k cut)."""
    owners = seq.owners()
    running = np.cumsum(targets)
    before = np.r_[0, running][seq.indptr[:-1]]  # targets before each user's first event
    count = np.diff(np.r_[0, running][seq.indptr])  # targets per user
    held = targets & (running - before[owners] > count[owners] - k)
    first = np.full(len(seq.indptr) - 1, len(owners))
    np.minimum.at(first, owners[held], np.flatnonzero(held))
    labelled: np.ndarray = np.arange(len(owners)) >= first[owners]
    return labelled


def recent_events(
    sequences: Sequences | None, length: int, type_names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's last ``length`` items and event types, most recent last, front-padded with -1 (types 0).

    Type codes are positions in ``type_names`` (the training data's), whatever the sequences' own
    coding; a type training never saw gets ``len(type_names)``, which the DIN head treats as padding.
    """
    assert sequences is not None
    names = list(type_names)
    recode = np.array([names.index(n) if n in names else len(names) for n in sequences.type_names], dtype=np.int64)
    n_users = len(sequences.indptr) - 1
    counts = np.diff(sequences.indptr)
    owners = sequences.owners()
    slot = np.arange(len(owners)) - sequences.indptr[owners] - counts[owners] + length
    keep = slot >= 0
    items = np.full((n_users, length), -1, dtype=np.int64)
    types = np.zeros((n_users, length), dtype=np.int64)
    items[owners[keep], slot[keep]] = sequences.items[keep]
    if len(recode):
        types[owners[keep], slot[keep]] = recode[sequences.types[keep]]
    return items, types
