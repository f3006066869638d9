"""The default pipeline adapts to the data: what its heads learn from, its sources and its order, chosen on validation.

Why: the ranker's heads learn from labels cut out of the training period, and which cut teaches them the
task users meet depends on the data. On MovieLens 100k (each user's last 10 ratings held out) the same
pipeline scored NDCG@10 0.0653 on validation with labels from the last stretch of time and 0.1453 with
each user's last 10 as labels; on Online Retail (next month's purchases) the time window scored 0.3505 and
each user's last purchase 0.1876 (the choices recorded in benchmarks/results/quality.json and README's
``shopsense train`` output). No fixed default is right for both, so the pipeline tries a few settings
on a validation split cut from the training period only, scores each exactly as the evaluation scores
a model (full-catalogue NDCG@10 on the held-out users), and keeps the best, within a time budget.

The split is the latest ``validation_share`` of the events for ``shopsense train`` (serving predicts
what comes next), and the evaluation's own protocol applied again to its training part for
``shopsense evaluate`` (so the test is never looked at). The steps, in order, each skipped with the
reason when the budget cannot fit it (the pipeline as configured always runs, and is what ships when
nothing else could be measured):

1. **label cuts**: the configured one, the cut that mirrors the validation split, each user's last
   purchase (a random share of pairs only where the split is random: it was far behind elsewhere);
2. **single sources**: every candidate source alone, and models that are not sources by default
   (:data:`EXTRA_SOURCES`: EASE, user-kNN, the hybrid, and SASRec on session-short histories);
3. **an extra source**: the one of those that alone beats every configured source joins the candidates;
4. **the guard**: if a source alone still beats every variant, the pipeline ranks by that source (the
   heads only break its ties), so what ships is never worse on validation than its best single source.

A setting replaces the configured one only when it beats it by more than two standard errors of the
per-user difference (the rule the ranker applies to its own choices): a change within noise is not worth
making. Choosing the best of a few validation scores is still slightly optimistic about the chosen one's
score; the test, where there is one, is untouched by it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopsense.errors import ShopsenseError
from shopsense.eval import budget as costs
from shopsense.eval.harness import EvalConfig, Prepared, Task, evaluate_model, prepare
from shopsense.eval.splits import Protocol, SplitConfig
from shopsense.extras import NEURAL, installed
from shopsense.models.registry import MODELS, build_model
from shopsense.pipeline import ChoiceConfig, PipelineConfig
from shopsense.ranking.candidates import CandidateConfig, Source
from shopsense.ranking.ranker import SURE, RankerConfig, TwoStage, better, paired_se

log = logging.getLogger(__name__)
SEQUENCE_MINUTES = 3.0
"""SASRec's training limit as a source the choice adds: it fits three times (alone on validation, then
twice inside the pipeline), so it gets a share of the budget, keeping its best state when time runs out."""
SESSION_EVENTS = 10
"""Sequence models (``needs_sequences``) are tried only where histories are session-short: half of the
training events belong to users with at most this many events (YooChoose's and Diginetica's sessions,
where benchmarks/results/quality.json records SASRec tried). That is where SASRec beat every other model
on the shared datasets; where histories are long (Online Retail, where README's ``train`` output shows
half the events from users with more than 271, MovieLens, Instacart) it lost to the configured sources
everywhere, and its three fits would cost minutes of every ``train`` for nothing. Counted over events,
not users: most of Online Retail's customers have few events, but its events come from customers with
hundreds."""
EXTRA_SOURCES = (
    Source(name="ease", model="ease", n=50),
    Source(name="similar_users", model="user_knn", n=50),
    Source(name="blend", model="hybrid", n=50),
    Source(name="sequence", model="sasrec", n=50, params={"max_minutes": SEQUENCE_MINUTES}),
)
"""Models tried as one more candidate source where one alone beats every configured source: each beat the
configured sources alone somewhere (EASE on MovieLens 100k, the repeat/co-occurrence blend on Online Retail,
user-kNN and SASRec on YooChoose and Diginetica, where the order of a session's clicks says what comes
next). SASRec is tried only with the ``neural`` extra."""


@dataclass(frozen=True)
class Trial:
    """One setting tried on the validation split: what changed from the configuration, and how it scored."""

    name: str
    why: str
    update: dict[str, Any]
    ndcg10: float = float("nan")
    ci95: tuple[float, float] = (float("nan"), float("nan"))
    seconds: float = float("nan")
    error: str | None = None
    per_user: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    """NDCG@10 of each validation user (the same users for every trial), for the paired comparison."""


@dataclass(frozen=True)
class Choice:
    """The ranker settings chosen, why, and every trial (and skip) that decided it."""

    ranker: RankerConfig
    chosen: str
    why: str
    validation: str
    task: str
    trials: list[Trial] = field(default_factory=list)
    sources: dict[str, Trial] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for bundle metadata and reports."""
        return {
            "chosen": self.chosen,
            "why": self.why,
            "validation": self.validation,
            "task": self.task,
            "settings": self.ranker.model_dump(mode="json", include=CHOSEN_FIELDS),
            "trials": [_plain(t) for t in self.trials],
            "sources": {name: _plain(t) for name, t in self.sources.items()},
            "skipped": self.skipped,
            "seconds": round(self.seconds, 1),
        }


def _plain(trial: Trial) -> dict[str, Any]:
    """A trial as JSON values: NaN (not measured) becomes None, which JSON can carry."""
    values = asdict(trial)
    del values["per_user"]
    values["update"] = {
        k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in trial.update.items()
    }
    values["ci95"] = [None if v != v else v for v in trial.ci95]
    for key in ("ndcg10", "seconds"):
        values[key] = None if values[key] != values[key] else round(values[key], 6)
    return values


CHOSEN_FIELDS = {"label_mode", "label_last", "label_fraction", "rank_by"}
"""The ranker settings a choice may change (besides the candidate sources), shown with the choice."""


def unchosen(ranker: RankerConfig, why: str) -> Choice:
    """The configured settings, unchanged, with the reason nothing was chosen."""
    return Choice(ranker, "configured", why, "", "")


def training_choice(
    events: pa.Table, catalog: pa.Table | None, weights: dict[str, float], config: PipelineConfig, task: Task
) -> Choice:
    """The choice ``shopsense train`` makes: validated on the latest ``choice.validation_share`` of ``events``.

    ``task`` is what the served lists are judged on: ``new`` where the pipeline's rules hide what a
    user bought, ``all`` where re-buys are recommended.
    """
    if not config.choice.enabled:
        return unchosen(config.ranker, "choice.enabled is false: the ranker as configured")
    split = SplitConfig(
        protocol=Protocol.TEMPORAL,
        test_quantile=1 - config.choice.validation_share,
        target_types=config.ranker.purchase_types,
    )
    settings = EvalConfig(
        split=split, tasks=(task,), weights=weights, bootstrap=200, max_test_users=config.choice.max_users
    )
    try:
        valid = prepare(events, settings, catalog)
    except (ShopsenseError, ValueError) as error:
        return unchosen(config.ranker, f"no validation split: {error}")
    return choose(valid, config.ranker, task, config.choice)


def choose(valid: Prepared, ranker: RankerConfig, task: Task, config: ChoiceConfig) -> Choice:
    """The best of a few ranker settings on ``valid`` (see the module's steps), within ``config.budget_seconds``."""
    started = time.perf_counter()
    run = _Trials(valid, ranker, task, config.budget_seconds, started)
    for name, why, update in label_variants(ranker, valid.config.split):
        run.pipeline(name, why, update)
    best = run.best()
    if best is None:
        return unchosen(ranker, "no setting could be fitted on the validation split: " + run.errors())
    for source in (*ranker.candidates.sources, *extra_sources(ranker, valid, run.skipped)):
        run.source(source)
    top = run.best_source()
    extra = next((s for s in EXTRA_SOURCES if top is not None and s.name == top.name), None)
    joined = best.update
    if extra is not None:
        joined = {**best.update, "candidates": CandidateConfig(sources=(*ranker.candidates.sources, extra))}
        run.pipeline(f"+{extra.name}", f"{extra.name} alone beats every configured source", joined, extra.name)
        best = run.best() or best
    # the guard may rank by the extra source even when the pipeline with it could not be measured
    top = run.best_source(within=_source_names(ranker, joined))
    if top is not None and top.ndcg10 > best.ndcg10:
        guard = f"rank by {top.name}"
        update = {**(joined if extra is not None and top.name == extra.name else best.update), "rank_by": top.name}
        run.pipeline(guard, f"{top.name} alone beats every setting tried: the heads only break its ties", update)
        best = run.best() or best
        if not run.measured(guard):  # the budget is spent; ranking by the source is the safe side
            best = Trial(guard, "the guard (not measured: no budget left)", update)
    chosen = ranker.model_copy(update=best.update)
    why = _why(best, run.trials, run.sources)
    seconds = time.perf_counter() - started
    log.info("chose %s on validation: %s", best.name, why)
    return Choice(
        chosen, best.name, why, valid.split.description, str(task), run.trials, run.sources, run.skipped, seconds
    )


def extra_sources(ranker: RankerConfig, valid: Prepared, skipped: list[str]) -> list[Source]:
    """The :data:`EXTRA_SOURCES` worth trying on ``valid``: not configured already, their ``requires``
    installed, and sequence models only on session-short histories (:data:`SESSION_EVENTS`); each one
    left out is listed in ``skipped`` with the reason."""
    configured = {source.model for source in ranker.candidates.sources}
    typical = _typical_history(valid.split.train)
    kept = []
    for source in EXTRA_SOURCES:
        if source.model in configured:
            continue
        model = MODELS[source.model]
        missing = [module for module in model.requires if not installed(module)]
        if missing:
            skipped.append(f"{source.name} alone: needs {', '.join(missing)} (pip install 'shopsense[{NEURAL}]')")
        elif model.needs_sequences and typical > SESSION_EVENTS:
            skipped.append(
                f"{source.name} alone: histories are long (half the events from users with more than {typical - 1}"
                f" events; sessions: {SESSION_EVENTS} or fewer), where order did not pay for its fits"
            )
        else:
            kept.append(source)
    return kept


def _typical_history(events: pa.Table) -> int:
    """The history length of the typical event's user: half of ``events`` belong to users with at most this many."""
    counts = np.sort(pc.value_counts(events["user_id"]).field("counts").to_numpy())
    if not len(counts):
        return 0
    return int(counts[np.searchsorted(np.cumsum(counts), counts.sum() / 2)])


def label_variants(ranker: RankerConfig, split: SplitConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """Label cuts to try, the configured one first; the same cut reached twice is tried once."""
    mirrors: dict[Protocol, dict[str, Any]] = {
        Protocol.TEMPORAL: {
            "label_mode": "time",
            "label_days": None,
            "label_fraction": round(1 - split.test_quantile, 9),
        },
        Protocol.LEAVE_LAST: {"label_mode": "last", "label_last": split.last_k},
        Protocol.RANDOM: {"label_mode": "random", "label_fraction": split.test_fraction},
    }
    mirror = mirrors[split.protocol]
    variants = [
        ("configured", "the pipeline as configured", {}),
        ("labels like validation", f"labels cut as the validation split cuts its test ({split.protocol})", mirror),
        ("last purchase", "each user's last purchase is the label", {"label_mode": "last", "label_last": 1}),
    ]
    seen: list[RankerConfig] = []
    kept = []
    for name, why, update in variants:
        effective = ranker.model_copy(update=update)
        if any(_same_labels(effective, other) for other in seen):
            continue
        seen.append(effective)
        kept.append((name, why, update))
    return kept


def _same_labels(a: RankerConfig, b: RankerConfig) -> bool:
    """Whether two settings cut the same kind of labels: time windows of any length count as one (10% or 15%
    of the events made no measurable difference on validation and would cost a whole trial)."""
    if a.label_mode != b.label_mode:
        return False
    if a.label_mode == "last":
        return a.label_last == b.label_last
    if a.label_mode == "random":
        return a.label_fraction == b.label_fraction
    return True


def _source_names(ranker: RankerConfig, update: dict[str, Any]) -> set[str]:
    """The candidate source names of the configuration with ``update`` applied."""
    candidates: CandidateConfig = update.get("candidates", ranker.candidates)
    return {source.name for source in candidates.sources}


def _why(best: Trial, trials: list[Trial], sources: dict[str, Trial]) -> str:
    """One sentence: the chosen trial's score against the runner-up and the best single source."""
    scored = [t for t in trials if t.error is None and t is not best and t.name != best.name]
    measured = "not measured, no budget left" if best.ndcg10 != best.ndcg10 else f"{best.ndcg10:.4f}"
    parts = [f"{best.name}: NDCG@10 {measured} on validation"]
    if scored:
        runner = max(scored, key=lambda t: t.ndcg10)
        noise = " (higher, but within two standard errors: no measurable gain)" if runner.ndcg10 > best.ndcg10 else ""
        parts.append(f"next best {runner.name} {runner.ndcg10:.4f}{noise}")
    alone = [t for t in sources.values() if t.error is None]
    if alone:
        top = max(alone, key=lambda t: t.ndcg10)
        parts.append(f"best single source {top.name} {top.ndcg10:.4f}")
    return "; ".join(parts)


class _Trials:
    """The trials of one choice, run while the budget lasts (the first pipeline trial always runs)."""

    def __init__(self, valid: Prepared, ranker: RankerConfig, task: Task, budget: float, started: float) -> None:
        self.valid, self.ranker, self.task, self.budget, self.started = valid, ranker, task, budget, started
        self.trials: list[Trial] = []
        self.sources: dict[str, Trial] = {}
        self.skipped: list[str] = []

    def _refuses(self, estimate: float) -> str | None:
        left = self.budget - (time.perf_counter() - self.started)
        if estimate <= left:
            return None
        return (
            f"needs ~{costs.duration(estimate)}, {costs.duration(max(left, 0.0))} of {costs.duration(self.budget)} left"
        )

    def _pipeline_estimate(self, extra: str | None) -> float:
        took = [t.seconds for t in self.trials if t.error is None]
        estimate = max(took, default=0.0)
        if extra is not None:  # the pipeline fits its sources twice: before the labels and on everything
            estimate += 2 * self.sources[extra].seconds
        return estimate

    def pipeline(self, name: str, why: str, update: dict[str, Any], extra: str | None = None) -> None:
        """Fit the pipeline with ``update`` on the validation split and score it, if the budget allows."""
        refusal = self._refuses(self._pipeline_estimate(extra)) if self.trials else None
        if refusal:
            self.skipped.append(f"{name}: {refusal}")
            return
        self.trials.append(self._score(name, why, update, lambda: TwoStage(self.ranker.model_copy(update=update))))

    def source(self, source: Source) -> None:
        """Score one candidate model alone, as its source configures it, if the budget allows."""
        refusal = self._refuses(costs.model_seconds(source.model, costs.DataSize.of(self.valid), source.params))
        if refusal:
            self.skipped.append(f"{source.name} alone: {refusal}")
            return
        trial = self._score(
            source.name, f"the {source.model} source alone", {}, lambda: build_model(source.model, source.params)
        )
        self.sources[source.name] = trial

    def _score(self, name: str, why: str, update: dict[str, Any], build: Any) -> Trial:
        began = time.perf_counter()
        try:
            result = evaluate_model(self.valid, name, build())
        except (ShopsenseError, ValueError, MemoryError) as error:
            log.warning("choice: %s failed on validation: %s", name, error)
            return Trial(name, why, update, seconds=time.perf_counter() - began, error=str(error))
        scores = result.tasks[self.task]
        took = time.perf_counter() - began
        return Trial(
            name, why, update, scores.metrics["ndcg@10"], scores.ci95_ndcg10, took, per_user=scores.per_user_ndcg10
        )

    def best(self) -> Trial | None:
        """The pipeline trial to ship: the first scored (the configuration as written) unless another beats it
        by more than ``SURE`` standard errors of the per-user difference (the ranker's rule for every such
        choice, :func:`~shopsense.ranking.ranker.better`): a change within noise is not worth making."""
        scored = [t for t in self.trials if t.error is None]
        if not scored:
            return None
        default = scored[0]
        margins = {t.name: SURE * paired_se(t.per_user, default.per_user) for t in scored[1:]}
        name = better({t.name: t.ndcg10 for t in scored}, default=default.name, lower=False, margins=margins)
        return next(t for t in scored if t.name == name)

    def best_source(self, within: set[str] | None = None) -> Trial | None:
        """The best scored single source (among ``within`` when given)."""
        scored = [t for n, t in self.sources.items() if t.error is None and (within is None or n in within)]
        return max(scored, key=lambda t: t.ndcg10) if scored else None

    def measured(self, name: str) -> bool:
        return any(t.name == name and t.error is None for t in self.trials)

    def errors(self) -> str:
        return "; ".join(f"{t.name}: {t.error}" for t in self.trials if t.error) or "nothing ran"
