"""One evaluation run over any events: tune on validation, fit on train, score on test, report.

Used by ``shopsense evaluate`` (data in the store) and by ``benchmarks/quality.py`` (public
datasets, plus peer libraries whose lists are added with :meth:`EvaluationRun.add_lists`).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from shopsense.errors import ShopsenseError
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
from shopsense.eval.tuning import GRIDS, Trial, tune_interactions, tune_model, validation
from shopsense.models.registry import build_model, config_class, model_class

log = logging.getLogger(__name__)


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
    ) -> None:
        self.dataset = dataset
        self.catalog = catalog
        self.primary = primary if primary in config.tasks else config.tasks[0]
        self.tune = tune
        self.tuning: dict[str, list[Trial]] = {}
        self.prepared: Prepared = prepare(events, config, catalog)
        self.config = config
        self.tuning_note = ""
        if tune:
            try:
                trials = tune_interactions(self.prepared.split.train, config, self.primary, catalog=catalog)
            except ShopsenseError as error:  # too little data before the test period to validate on
                self.tune = False
                self.tuning_note = f"tuning skipped: {error}"
                log.warning("%s: %s", dataset, self.tuning_note)
            else:
                self.tuning["interactions"] = trials
                best = trials[0].params
                self.config = config.model_copy(
                    update={"weights": best["weights"], "half_life_days": best["half_life_days"]}
                )
                self.prepared = prepare(events, self.config, catalog)
        self._valid: Prepared | None = None
        self.results: list[ModelResult] = []
        self.best_params: dict[str, dict[str, Any]] = {}

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
        points = grid if grid is not None else GRIDS.get(name, [{}])
        chosen = params if params is not None else points[0]
        try:
            if params is None and self.tune and len(points) > 1:
                trials = tune_model(self.valid, name, self.primary, [self._targeted(name, p) for p in points])
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

    def add_failure(self, name: str, error: str, *, peer: bool, params: dict[str, Any] | None = None) -> None:
        """A model that produced no lists (crashed, ran out of time): reported with its reason, not dropped."""
        nan = float("nan")
        self.results.append(ModelResult(name, peer, nan, nan, params or {}, {}, error=error))

    def report(self) -> dict[str, Any]:
        """Paired tests against the best model, then the JSON-ready report (with the tuning trail)."""
        compare(self.results)
        report = build_report(self.dataset, self.prepared, self.results, self.primary)
        report["tuning_note"] = self.tuning_note or "weights, decay and parameters chosen on the validation split"
        report["tuning"] = {
            name: [{"params": t.params, "valid_ndcg@10": round(t.ndcg10, 4)} for t in trials]
            for name, trials in self.tuning.items()
        }
        return report
