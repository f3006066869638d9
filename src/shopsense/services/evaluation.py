"""One evaluation run over any events: tune on validation, fit on train, score on test, report.

Used by ``shopsense evaluate`` (data in the store) and by ``benchmarks/quality.py`` (public
datasets, plus peer libraries whose lists are added with :meth:`EvaluationRun.add_lists`).
Besides single models a run scores whole pipelines (:meth:`EvaluationRun.add_pipeline`: the
two-stage ranker ``shopsense train`` builds) on the same split and metrics. With a
:class:`~shopsense.eval.budget.Budget`, a step that is not estimated to fit what is left is
skipped with the reason, tuning grids are cut, and time-limited models get the time left;
everything scaled down is listed in the report's ``scaled_down``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from shopsense.errors import ShopsenseError
from shopsense.eval import budget as costs
from shopsense.eval.budget import Budget, DataSize, duration
from shopsense.eval.harness import (
    EvalConfig,
    ModelResult,
    Prepared,
    Task,
    compare,
    evaluate_lists,
    evaluate_model,
    prepare,
)
from shopsense.eval.report import build_report
from shopsense.eval.tuning import GRIDS, INTERACTION_TRIALS, Trial, tune_interactions, tune_model, validation
from shopsense.models.registry import build_model, config_class, model_class

if TYPE_CHECKING:
    from shopsense.eval.choice import Choice
    from shopsense.pipeline import ChoiceConfig, PipelineConfig
    from shopsense.ranking.ranker import RankerConfig
    from shopsense.store import Store

log = logging.getLogger(__name__)
BUDGET_SHARE = 0.5
"""Share of the time left a time-limited model (``max_minutes``) may take when a budget is set."""


def check_models(names: list[str]) -> None:
    """Refuse an unknown model name before any data is read (ValueError naming it and the known ones)."""
    for name in names:
        model_class(name)


class EvaluationRun:
    """The models of one dataset on one split, tuned the same way, scored against the same truth."""

    def __init__(
        self,
        dataset: str,
        events: pa.Table,
        config: EvalConfig,
        *,
        catalog: pa.Table | None = None,
        primary: Task = Task.ALL,
        tune: bool = True,
        params: dict[str, dict[str, Any]] | None = None,
        budget: Budget | None = None,
        defer_tuning: bool = False,
    ) -> None:
        """``params``: per model, parameters the user fixed (tuning varies only the others). ``defer_tuning``:
        leave the interaction weights to :meth:`tune_interactions` (called here otherwise, when tuning)."""
        self.dataset = dataset
        self.catalog = catalog
        self.primary = primary if primary in config.tasks else config.tasks[0]
        self.tune = tune
        self.fixed = params or {}
        self.budget = budget or Budget(None)
        self.scaled_down: list[str] = []
        self.tuning: dict[str, list[Trial]] = {}
        self._events = events
        self.prepared: Prepared = prepare(events, config, catalog)
        self.config = config
        self.tuning_note = ""
        self._valid: Prepared | None = None
        self.results: list[ModelResult] = []
        self.best_params: dict[str, dict[str, Any]] = {}
        if tune and not defer_tuning:
            self.tune_interactions()

    @property
    def size(self) -> DataSize:
        """The figures cost estimates scale with."""
        return DataSize.of(self.prepared)

    def tune_interactions(self) -> None:
        """Choose event-type weights and time decay on the validation split, then cut the split again with them.

        Skipped (and reported) when the budget cannot fit it; tuning stops for the run when there is too
        little data before the test period to validate on.
        """
        refusal = self.budget.refuses(costs.with_tuning(self._probe_seconds(), INTERACTION_TRIALS))
        if refusal:
            self.scaled_down.append(f"interaction weights not tuned ({refusal.removeprefix('skipped: ')})")
            return
        try:
            trials = tune_interactions(self.prepared.split.train, self.config, self.primary, catalog=self.catalog)
        except ShopsenseError as error:  # too little data before the test period to validate on
            self.tune = False
            self.tuning_note = f"tuning skipped: {error}"
            log.warning("%s: %s", self.dataset, self.tuning_note)
            return
        self.tuning["interactions"] = trials
        best = trials[0].params
        self.config = self.config.model_copy(
            update={"weights": best["weights"], "half_life_days": best["half_life_days"]}
        )
        self.prepared = prepare(self._events, self.config, self.catalog)
        self._valid = None

    def _probe_seconds(self) -> float:
        return costs.model_seconds("item_knn", self.size)

    def estimate(
        self, models: list[str], pipelines: list[str], peers: list[str], hybrid: list[str] | None = None
    ) -> dict[str, float]:
        """Seconds each step is expected to take (interaction tuning first, when still to do), for a plan."""
        size = self.size
        plan: dict[str, float] = {}
        if self.tune and "interactions" not in self.tuning:
            plan["interaction weights"] = costs.with_tuning(self._probe_seconds(), INTERACTION_TRIALS)
        for name in models:
            points = len(GRIDS.get(name, [{}])) if self.tune else 1
            plan[name] = costs.with_tuning(costs.model_seconds(name, size, self.fixed.get(name)), points)
        if hybrid:
            points = 2 ** (len(hybrid) - 1) if self.tune else 1
            plan["hybrid"] = costs.with_tuning(costs.model_seconds("hybrid", size), points)
        for name in pipelines:
            plan[f"pipeline:{name}"] = costs.pipeline_seconds(size, choosing=True)
        for name in peers:
            plan[name] = costs.model_seconds("als", size) + costs.model_seconds("bpr", size)
        return plan

    @property
    def valid(self) -> Prepared:
        """The validation split (built on first use, from the training events only)."""
        if self._valid is None:
            self._valid = validation(self.prepared.split.train, self.config, self.catalog)
        return self._valid

    def add_model(
        self, name: str, params: dict[str, Any] | None = None, *, grid: list[dict[str, Any]] | None = None
    ) -> ModelResult:
        """Tune (unless params are given or tuning is off), fit on train and score on test.

        A model whose config takes ``target_types`` learns to predict the event types the split
        predicts, unless told otherwise. With a single candidate there is nothing to tune.
        """
        bound, note = self._time_limit(name)
        fixed = {**bound, **self.fixed.get(name, {})}
        points = _unique([{**p, **fixed} for p in (grid if grid is not None else GRIDS.get(name, [{}]))])
        chosen = {**params, **fixed} if params is not None else points[0]
        tune = params is None and self.tune and len(points) > 1
        once = costs.model_seconds(name, self.size, chosen)
        refusal = self.budget.refuses(once)
        if refusal:
            self.add_failure(name, refusal, peer=False, params=chosen, skipped=True)
            return self.results[-1]
        if note:
            self.scaled_down.append(note)
        grid_seconds = costs.with_tuning(once, len(points))
        if tune and self.budget.refuses(grid_seconds):
            tune = False
            self.scaled_down.append(
                f"{name}: not tuned (its {len(points)}-point grid needs ~{duration(grid_seconds)}, "
                f"{duration(self.budget.left())} left)"
            )
        try:
            if tune:
                targeted = [self._targeted(name, p) for p in points]
                trials = tune_model(self.valid, name, self.primary, targeted, seconds=self.budget.left() - once)
                if len(trials) < len(points):
                    slowest = duration(max(t.seconds for t in trials))
                    self.scaled_down.append(
                        f"{name}: tuning grid cut to {len(trials)} of {len(points)} points (a fit took {slowest})"
                    )
                self.tuning[name] = trials
                chosen = trials[0].params
            chosen = self._targeted(name, chosen)
            self.best_params[name] = chosen
            result = evaluate_model(self.prepared, name, build_model(name, chosen))
        except (ShopsenseError, ValueError, MemoryError) as error:
            log.warning("%s failed on %s: %s", name, self.dataset, error)
            self.add_failure(name, str(error), peer=False, params=chosen)
            return self.results[-1]
        self.results.append(result)
        return result

    def _time_limit(self, name: str) -> tuple[dict[str, Any], str | None]:
        """With a budget, a time-limited model (``max_minutes``) the user did not bound gets a share of the time
        left: the parameter and the note saying so, or nothing."""
        field = config_class(name).model_fields.get("max_minutes")
        left = self.budget.left()
        if field is None or "max_minutes" in self.fixed.get(name, {}) or left == float("inf"):
            return {}, None
        minutes = round(max(left * BUDGET_SHARE, 1.0) / 60, 2)
        if not isinstance(field.default, float | int) or minutes >= field.default:
            return {}, None
        note = f"{name}: max_minutes {field.default:g} -> {minutes:g} (half the {duration(left)} left of the budget)"
        return {"max_minutes": minutes}, None if model_class(name).sizes_itself else note

    def add_pipeline(self, name: str, config: PipelineConfig) -> ModelResult:
        """A named pipeline's two-stage ranker (candidates, heads, fusion) fitted on train and scored like a model.

        It predicts the split's target event types (its ``purchase_types``, when they differ); its other
        settings are the pipeline's own, as ``shopsense train`` would use them. Business rules and
        diversity re-ranking are request-time choices and are not applied.
        """
        from shopsense.ranking.ranker import TwoStage

        row = f"pipeline:{name}"
        ranker = config.ranker
        targets = self.config.split.target_types
        if tuple(ranker.purchase_types) != tuple(targets):
            attention = tuple(t for t in ranker.attention_types if t not in targets)
            ranker = ranker.model_copy(update={"purchase_types": targets, "attention_types": attention})
        params = ranker.model_dump(mode="json")
        refusal = self.budget.refuses(costs.pipeline_seconds(self.size))
        if refusal:
            self.add_failure(row, refusal, peer=False, params=params, skipped=True)
            return self.results[-1]
        try:
            choice = self._choose(ranker, config.choice)
            ranker = choice.ranker
            result = evaluate_model(self.prepared, row, TwoStage(ranker))
        except (ShopsenseError, ValueError, MemoryError) as error:
            log.warning("%s failed on %s: %s", row, self.dataset, error)
            self.add_failure(row, str(error), peer=False, params=params)
            return self.results[-1]
        result.params = {**result.params, "choice": choice.as_dict()}
        self.results.append(result)
        return result

    def _choose(self, ranker: RankerConfig, config: ChoiceConfig) -> Choice:
        """The pipeline's own choice (:mod:`shopsense.eval.choice`) on this run's validation split and primary
        task, as ``train`` makes it on the latest events: the test is never looked at."""
        from shopsense.eval.choice import choose, unchosen

        if not config.enabled:
            return unchosen(ranker, "choice.enabled is false: the ranker as configured")
        seconds = min(config.budget_seconds, self.budget.left() * BUDGET_SHARE)
        try:
            valid = self.valid
        except ShopsenseError as error:
            return unchosen(ranker, f"no validation split: {error}")
        return choose(valid, ranker, self.primary, config.model_copy(update={"budget_seconds": max(seconds, 1.0)}))

    def add_peer(self, peer: str) -> list[ModelResult]:
        """Every model of a peer library run in-process (see :mod:`shopsense.eval.peers`), or its skip."""
        from shopsense.eval.peers import run_peer

        refusal = self.budget.refuses(self.estimate([], [], [peer])[peer])
        if refusal:
            self.add_failure(peer, refusal, peer=True, skipped=True)
            return self.results[-1:]
        return [self.add_lists(name, lists, **cost) for name, lists, cost in run_peer(peer, self.prepared)]

    def _targeted(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with the split's target types where the model takes them and they are not set."""
        if "target_types" in config_class(name).model_fields and "target_types" not in params:
            return {**params, "target_types": self.config.split.target_types}
        return params

    def add_hybrid(self, parts: list[str], weights: tuple[float, ...] = (0.3, 1.0)) -> ModelResult:
        """A weighted hybrid of already tuned models; the weights of all but the first are searched."""
        base = [{"model": name, "params": self.best_params.get(name, {})} for name in parts]
        grid = [
            {"parts": [{**part, "weight": w} for part, w in zip(base, (1.0, *combo), strict=True)]}
            for combo in itertools.product(weights, repeat=len(parts) - 1)
        ]
        return self.add_model("hybrid", None if self.tune else grid[-1], grid=grid)

    def add_lists(
        self, name: str, lists: dict[Task, np.ndarray], *, fit_seconds: float, peak_mb: float, params: dict[str, Any]
    ) -> ModelResult:
        """Top-K lists computed elsewhere (a peer library), scored against the same truth."""
        result = evaluate_lists(
            self.prepared, name, lists, peer=True, fit_seconds=fit_seconds, peak_mb=peak_mb, params=params
        )
        self.results.append(result)
        return result

    def add_failure(
        self, name: str, error: str, *, peer: bool, params: dict[str, Any] | None = None, skipped: bool = False
    ) -> None:
        """A model that produced no lists (crashed, ran out of time, or ``skipped`` as the budget could not
        fit it): reported with its reason, not dropped."""
        nan = float("nan")
        self.results.append(ModelResult(name, peer, nan, nan, params or {}, {}, error=error, skipped=skipped))

    def run_plan(
        self,
        models: list[str],
        *,
        hybrid: list[str] | None = None,
        pipelines: dict[str, PipelineConfig] | None = None,
        peers: list[str] | None = None,
        say: Callable[[str], None] = log.info,
    ) -> dict[str, Any]:
        """Estimate, then tune the interactions, score the models, the hybrid, the pipelines and the peers
        (each within what is left of the budget), and report; ``say`` hears the plan and each step."""
        pipelines, peers = pipelines or {}, peers or []
        plan = self.estimate(models, list(pipelines), peers, hybrid)
        budget = f"; budget {duration(self.budget.seconds)}" if self.budget.seconds is not None else ""
        steps = ", ".join(f"{name} ~{duration(seconds)}" for name, seconds in plan.items())
        say(f"estimate: ~{duration(sum(plan.values()))} ({steps}){budget}")
        if self.tune and "interactions" not in self.tuning:
            say("tuning interaction weights…")
            self.tune_interactions()
        steps_run: list[tuple[str, Callable[[], Any]]] = [(m, partial(self.add_model, m)) for m in models]
        if hybrid:
            steps_run.append(("hybrid", partial(self.add_hybrid, hybrid)))
        steps_run += [(f"pipeline:{n}", partial(self.add_pipeline, n, c)) for n, c in pipelines.items()]
        steps_run += [(peer, partial(self.add_peer, peer)) for peer in peers]
        for name, step in steps_run:
            say(f"evaluating {name}…")
            done = len(self.results)
            step()
            for result in self.results[done:]:
                if result.error:
                    say(f"{result.name}: {result.error}")
        report = self.report()
        report["estimate_seconds"] = {name: round(seconds, 1) for name, seconds in plan.items()}
        for note in report["scaled_down"]:
            say(f"scaled down: {note}")
        return report

    def report(self) -> dict[str, Any]:
        """Paired tests against the best model, then the JSON-ready report (with the tuning trail)."""
        compare(self.results)
        report = build_report(self.dataset, self.prepared, self.results, self.primary)
        report["tuning_note"] = self.tuning_note or "weights, decay and parameters chosen on the validation split"
        report["tuning"] = {
            name: [{"params": t.params, "valid_ndcg@10": round(t.ndcg10, 4)} for t in trials]
            for name, trials in self.tuning.items()
        }
        notes = [*self.scaled_down, *(note for result in self.results for note in result.scaled_down)]
        report["scaled_down"] = list(dict.fromkeys(notes))
        report["budget"] = {
            "seconds": self.budget.seconds,
            "spent_seconds": round(self.budget.spent(), 1),
            "skipped": [r.name for r in self.results if r.skipped],
        }
        return report


def store_evaluation(
    store: Store,
    weights: dict[str, float],
    dataset: str,
    config: EvalConfig,
    **options: Any,
) -> EvaluationRun:
    """A run over every event of a store, weighted by the settings' event types, its interaction tuning left
    to :meth:`EvaluationRun.run_plan` (so that the plan's estimate comes first).

    Raises:
        ShopsenseError: the store has no events.
    """
    events = store.scan_events()
    if events.num_rows == 0:
        raise ShopsenseError("the store has no events: import some first")
    weighted = config.model_copy(update={"weights": weights})
    return EvaluationRun(dataset, events, weighted, catalog=store.scan_items(), defer_tuning=True, **options)


def _unique(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Grid points without repeats (fixing a parameter can make two points one)."""
    seen: list[dict[str, Any]] = []
    for point in points:
        if point not in seen:
            seen.append(point)
    return seen
