"""RecommendationService: train a pipeline on the store's events and answer per-user requests.

A trained pipeline is one file under ``<data_dir>/models/<pipeline>.model`` (config, item
index, catalogue, fitted models). A request reads the user's events from the store at call
time, so behaviour imported after training already shapes the answer; the time features
count from the later of the training data's end and the user's latest event.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from shopsense.domain import IdIndex
from shopsense.errors import ConfigError, ShopsenseError
from shopsense.features.interactions import build_interactions
from shopsense.pipeline import Pipeline, Recommendation, load_pipeline
from shopsense.services.data import DataService

_FORMAT = b"shopsense-pipeline-1\n"
PIPELINE_DIRS = (Path("config/pipelines"),)


@dataclass(frozen=True)
class TrainResult:
    """What a training run fitted and how its heads did on held-out users."""

    pipeline: str
    path: Path
    events: int
    users: int
    items: int
    seconds: float
    heads: dict[str, Any]
    training: dict[str, Any]


class RecommendationService:
    """Trains pipelines and serves recommendations from the configured store."""

    def __init__(self, data: DataService) -> None:
        self.data = data
        self._loaded: dict[str, Pipeline] = {}

    def model_path(self, pipeline: str) -> Path:
        return self.data.settings.data_dir / "models" / f"{pipeline}.model"

    def train(self, pipeline: str = "default") -> TrainResult:
        """Fit the named pipeline on every stored event and save it; durable before it returns."""
        config = load_pipeline(pipeline, [self.data.settings.data_dir / "pipelines", *PIPELINE_DIRS])
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
        path = self.model_path(config.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        with partial.open("wb") as handle:
            handle.write(_FORMAT + pickle.dumps(fitted, protocol=5))
            handle.flush()
        partial.replace(path)  # atomic: a reader sees the old model or the new one, never half of one
        self._loaded[config.name] = fitted
        ranker = fitted.ranker
        return TrainResult(
            config.name,
            path,
            events.num_rows,
            len(data.users),
            len(data.items),
            time.perf_counter() - started,
            ranker.heads_report_,
            ranker.training_,
        )

    def pipeline(self, name: str = "default") -> Pipeline:
        """The trained pipeline, loaded once."""
        if name not in self._loaded:
            path = self.model_path(name)
            if not path.exists():
                raise ConfigError(f"pipeline {name!r} is not trained yet: run `shopsense train --pipeline {name}`")
            blob = path.read_bytes()
            if not blob.startswith(_FORMAT):
                raise ConfigError(f"{path} is not a shopsense pipeline file")
            self._loaded[name] = pickle.loads(blob[len(_FORMAT) :])
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
        history = build_interactions(
            events,
            self.data.settings.event_types.weights,
            items=fitted.items_,
            catalog=fitted.catalog_,
            users=IdIndex([user_id]),
            as_of=self._as_of(fitted, events),
        )
        try:
            return fitted.recommend(history, k, alpha=alpha, rules=rules, diversity=diversity)[0]
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    @staticmethod
    def _as_of(fitted: Pipeline, events: pa.Table) -> datetime:
        end = fitted.ranker.features_.as_of_
        if events.num_rows:
            latest = pc.max(events.column("timestamp")).as_py()
            end = max(end, int(latest.timestamp()))
        return datetime.fromtimestamp(end, UTC)
