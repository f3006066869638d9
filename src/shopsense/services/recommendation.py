"""RecommendationService: train a pipeline on the store's events and answer per-user requests.

Training writes a versioned bundle (:mod:`shopsense.services.bundles`). A CLI request reads the
user's events from the store at call time, so behaviour imported after training already shapes
the answer; the time features count from the later of the training data's end and the user's
latest event. (The HTTP server keeps histories in memory instead: ``services/serving.py``.)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from shopsense.errors import ConfigError, ShopsenseError
from shopsense.features.interactions import build_interactions
from shopsense.pipeline import Pipeline, PipelineConfig, Recommendation, load_pipeline
from shopsense.ranking.ranker import HEAD_MODELS
from shopsense.services.answers import build_answers
from shopsense.services.bundles import BundleInfo, Bundles
from shopsense.services.data import DataService

PIPELINE_DIRS = (Path("config/pipelines"),)


@dataclass(frozen=True)
class TrainResult:
    """What a training run fitted and how its heads did on held-out users."""

    bundle: BundleInfo
    path: Path
    seconds: float
    heads: dict[str, Any]
    training: dict[str, Any]

    def head_scores(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per fitted head model, its validation AUC, log-loss and positive share per target."""
        return {name: self.heads[name] for name in HEAD_MODELS if name in self.heads}


class RecommendationService:
    """Trains pipelines and serves recommendations from the configured store."""

    def __init__(self, data: DataService) -> None:
        self.data = data
        self._loaded: dict[str, Pipeline] = {}

    @property
    def bundles(self) -> Bundles:
        return Bundles(self.data.settings.data_dir / "models")

    def config(self, pipeline: str) -> PipelineConfig:
        """A pipeline's config: ``<data_dir>/pipelines`` first, then the bundled ``config/pipelines``."""
        return load_pipeline(pipeline, [self.data.settings.data_dir / "pipelines", *PIPELINE_DIRS])

    def train(self, pipeline: str = "default") -> TrainResult:
        """Fit the named pipeline on every stored event and save it as a new bundle version."""
        config = self.config(pipeline)
        store = self.data.store
        events = store.scan_events()
        if events.num_rows == 0:
            raise ShopsenseError("the store has no events: import some before training")
        started = time.perf_counter()
        data = build_interactions(events, self.data.settings.event_types.weights, catalog=store.scan_items())
        try:
            fitted = Pipeline(config).fit(data)
        except ValueError as exc:
            raise ShopsenseError(f"pipeline {config.name!r} could not be trained: {exc}") from exc
        seconds = time.perf_counter() - started
        ranker = fitted.ranker
        times = events.column("timestamp")
        training = {k: v for k, v in ranker.training_.items() if k != "feature_names"}
        training["repeat_share"] = fitted.repeat_share_
        training["exclude_purchased"] = fitted.rules.exclude_purchased
        serve = self.data.settings.serve
        precomputing = time.perf_counter()
        answers = build_answers(
            fitted, events, self.data.settings.event_types.weights, serve.precompute_k, serve.precompute_users
        )
        precompute_seconds = time.perf_counter() - precomputing
        info = self.bundles.write(
            fitted,
            {
                "data_from": pc.min(times).as_py().isoformat(),
                "data_to": pc.max(times).as_py().isoformat(),
                "events": events.num_rows,
                "users": len(data.users),
                "items": len(data.items),
                "metrics": {
                    "heads": ranker.heads_report_,
                    "training": training,
                    "seconds": round(seconds, 1),
                    "precompute_seconds": round(precompute_seconds, 1),
                },
                "answers_k": serve.precompute_k if answers.num_rows else 0,
                "answers_users": len(pc.unique(answers.column("user_id"))),
            },
            answers,
        )
        self._loaded[config.name] = fitted
        path = self.bundles.root / info.pipeline / info.version
        return TrainResult(info, path, seconds, ranker.heads_report_, training)

    def pipeline(self, name: str = "default") -> Pipeline:
        """The served bundle of a pipeline (pinned or newest), loaded once."""
        if name not in self._loaded:
            info = self.bundles.current(name)
            if info is None:
                raise ConfigError(f"pipeline {name!r} is not trained yet: run `shopsense train --pipeline {name}`")
            fitted = self.bundles.load(info)
            fitted.refresh_availability(self.data.store.scan_items())  # shelf changes since training
            self._loaded[name] = fitted
        return self._loaded[name]

    def recommend(
        self,
        user_id: str,
        k: int | None = None,
        *,
        pipeline: str = "default",
        alpha: float | None = None,
        rules: Mapping[str, Any] | None = None,
        diversity: float | None = None,
    ) -> list[Recommendation]:
        """Top-k for one user (known or not: a user with no history gets trending items)."""
        fitted = self.pipeline(pipeline)
        events = self.data.store.scan_events(user_ids=[user_id])
        weights = self.data.settings.event_types.weights
        try:
            return fitted.recommend_user(user_id, events, weights, k, alpha=alpha, rules=rules, diversity=diversity)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
