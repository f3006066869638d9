"""RecommendationService: train a pipeline on the store's events and answer per-user requests.

Training writes a versioned bundle (:mod:`shopsense.services.bundles`). A CLI request reads the
user's events from the store at call time, so behaviour imported after training already shapes
the answer; the time features count from the later of the training data's end and the user's
latest event. (The HTTP server keeps histories in memory instead: ``services/serving.py``.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from shopsense.errors import ConfigError, ShopsenseError
from shopsense.features.interactions import Interactions, build_interactions
from shopsense.ingest.source import export_format
from shopsense.pipeline import Pipeline, PipelineConfig, Recommendation, load_pipeline, repeat_share
from shopsense.ranking.ranker import HEAD_MODELS
from shopsense.services.answers import (
    RECOMMENDATIONS_SCHEMA,
    answer_batches,
    build_answers,
    export_recommendations,
    recommendations_table,
    similar_items,
)
from shopsense.services.bundles import BundleInfo, Bundles
from shopsense.services.data import DataService
from shopsense.settings import Settings
from shopsense.store.base import erasure_hash

if TYPE_CHECKING:
    from shopsense.eval.choice import Choice

log = logging.getLogger(__name__)
PIPELINE_DIRS = (Path(__file__).resolve().parents[1] / "data" / "pipelines",)
"""The pipelines shipped in the package (``default``, ``homepage``, ``checkout``): found from any working folder."""


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


def pipeline_config(settings: Settings, pipeline: str) -> PipelineConfig:
    """A pipeline's config (``<data_dir>/pipelines`` first, then the package's bundled ones), without a
    store: a training request checks its pipeline before it starts a job."""
    return load_pipeline(pipeline, [settings.data_dir / "pipelines", *PIPELINE_DIRS])


class RecommendationService:
    """Trains pipelines and serves recommendations from the configured store."""

    def __init__(self, data: DataService, bundles: Bundles | None = None) -> None:
        """``bundles``: where training writes and whose pins say what is served (by default those of the
        data directory and store, :meth:`Bundles.of`)."""
        self.data = data
        self.bundles = bundles or Bundles.of(data.settings)
        self._loaded: dict[str, Pipeline] = {}

    def config(self, pipeline: str) -> PipelineConfig:
        """A pipeline's config: ``<data_dir>/pipelines`` first, then the package's bundled ones."""
        return pipeline_config(self.data.settings, pipeline)

    def train(self, pipeline: str = "default") -> TrainResult:
        """Fit the named pipeline on every stored event and save it as a new bundle version, promoted to
        be the one served (with a shared store, every replica switches to it)."""
        from shopsense.eval.harness import scaled_down

        config = self.config(pipeline)
        store = self.data.store
        log.info("reading events")
        read_at = datetime.now(UTC)  # an erasure from now on may find the user in this bundle
        events = store.scan_events()
        if events.num_rows == 0:
            raise ShopsenseError("the store has no events: import some before training")
        started = time.perf_counter()
        weights, catalog = self.data.settings.event_types.weights, store.scan_items()
        data = build_interactions(events, weights, catalog=catalog)
        choice = self._choose(events, catalog, data, config)
        config = config.model_copy(update={"ranker": choice.ranker})
        try:
            fitted = Pipeline(config).fit(data)
        except ValueError as exc:
            raise ShopsenseError(f"pipeline {config.name!r} could not be trained: {exc}") from exc
        seconds = time.perf_counter() - started
        ranker = fitted.ranker
        times = events.column("timestamp")
        training: dict[str, Any] = {k: v for k, v in ranker.training_.items() if k != "feature_names"}
        training["repeat_share"] = fitted.repeat_share_
        training["exclude_purchased"] = fitted.rules.exclude_purchased
        training["scaled_down"] = scaled_down(ranker)  # what a source sized down to fit this machine, and why
        training["choice"] = choice.as_dict()
        serve = self.data.settings.serve
        log.info("precomputing answers")
        precomputing = time.perf_counter()
        answers = build_answers(
            fitted, events, self.data.settings.event_types.weights, serve.precompute_k, serve.precompute_users
        )
        precompute_seconds = time.perf_counter() - precomputing
        info = self.bundles.write(
            fitted,
            {
                "read_at": read_at.isoformat(),
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
        self.bundles.promote(info)
        self._loaded[config.name] = fitted
        path = self.bundles.root / info.pipeline / info.version
        return TrainResult(info, path, seconds, ranker.heads_report_, training)

    def _choose(self, events: pa.Table, catalog: pa.Table, data: Interactions, config: PipelineConfig) -> Choice:
        """The ranker settings validation prefers (:mod:`shopsense.eval.choice`), judged on the task the served
        lists face: new items only where the pipeline's rules hide what a user bought."""
        from shopsense.eval.choice import training_choice
        from shopsense.eval.harness import Task

        assert data.sequences is not None  # build_interactions keeps them
        rules = config.rules.resolved(repeat_share(data.sequences, config.ranker.purchase_types))
        task = Task.NEW if rules.exclude_purchased else Task.ALL
        log.info("choosing the ranker's settings on a validation split")
        return training_choice(events, catalog, self.data.settings.event_types.weights, config, task)

    def pipeline(self, name: str = "default") -> Pipeline:
        """The served bundle of a pipeline (pinned or newest), loaded once."""
        if name not in self._loaded:
            info = self.bundles.current(name)
            if info is None:
                raise ConfigError(f"pipeline {name!r} is not trained yet: run `shopsense train --pipeline {name}`")
            fitted = self.bundles.load(info)
            fitted.refresh_availability(self.data.store.scan_items())  # shelf changes since training
            erased = info.erased_users(self.data.store.tombstones())  # unknown to it: erased since training
            if erased:
                fitted.forget_users(lambda user: erasure_hash(user) in erased)
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

    def similar(self, item_id: str, k: int = 10, *, pipeline: str = "default") -> list[dict[str, Any]]:
        """Items related to one item from the served bundle: the answer of ``GET /v1/items/{id}/similar``."""
        try:
            return similar_items(self.pipeline(pipeline), item_id, k)
        except KeyError as exc:
            raise ShopsenseError(
                f"item {item_id!r} is not known to pipeline {pipeline!r} (not among the items it was trained on)"
            ) from exc

    def recommend_batch(
        self,
        out: Path,
        user_ids: list[str] | None = None,
        *,
        segment: str | None = None,
        skip_unknown: bool = False,
        k: int | None = None,
        pipeline: str = "default",
        alpha: float | None = None,
        rules: Mapping[str, Any] | None = None,
        diversity: float | None = None,
        batch: int = 1_000,
        progress: Callable[[int, int], None] | None = None,
    ) -> BatchRecommendations:
        """Recommendations for many users written to ``out`` (.csv, .parquet or .jsonl; one row per item).

        Whom: ``user_ids``, or the customers a profile ``segment`` expression selects, or else every
        non-guest user with stored events. Their events are read from the store once and answered
        ``batch`` users per pipeline pass (the path that precomputes a bundle's answers), never one
        request per user. ``progress(done, total)`` is told of each batch.

        Raises:
            ConfigError: an export file that cannot be written, ids and a segment both, a bad segment,
                or an alpha, diversity or rule out of range.
            ShopsenseError: ids without stored events (listed), unless ``skip_unknown`` leaves them out.
        """
        export_format(out)  # a name no format fits is refused before any work
        if user_ids is not None and segment is not None:
            raise ConfigError("give user ids or a segment, not both")
        fitted = self.pipeline(pipeline)
        store = self.data.store
        if segment is not None:
            from shopsense.services.marketing import MarketingService  # lifetimes and friends: only when asked

            user_ids = MarketingService(self.data.settings, store).segments({"segment": segment}).members("segment")
        skipped: list[str] = []
        if user_ids is None:
            events = store.scan_events()
            known = pc.unique(events.column("user_id"))
            known = known.filter(pc.invert(pc.is_in(known, pa.array(store.guest_user_ids(), pa.string()))))
            users = known.take(pc.array_sort_indices(known)).to_pylist()
        else:
            asked = pa.array(list(dict.fromkeys(user_ids)), pa.string())  # each once, in the order given
            events = store.scan_events(user_ids=asked.to_pylist())
            found = pc.is_in(asked, pc.unique(events.column("user_id")))
            skipped = asked.filter(pc.invert(found)).to_pylist()
            if skipped and not skip_unknown:
                shown = ", ".join(repr(u) for u in skipped[:20]) + (" …" if len(skipped) > 20 else "")
                raise ShopsenseError(
                    f"{len(skipped):,} of {len(asked):,} users have no stored events: {shown} "
                    "(check the ids, or leave them out with --skip-unknown)"
                )
            users = asked.filter(found).to_pylist()
        weights = self.data.settings.event_types.weights
        parts, done = [RECOMMENDATIONS_SCHEMA.empty_table()], 0
        try:
            batches = answer_batches(
                fitted, events, weights, users, k, batch, alpha=alpha, rules=rules, diversity=diversity
            )
            for ids, answers in batches:
                parts.append(recommendations_table(ids, answers))
                done += len(ids)
                if progress is not None:
                    progress(done, len(users))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        table = pa.concat_tables(parts)
        return BatchRecommendations(export_recommendations(table, out), len(users), table.num_rows, skipped)


@dataclass(frozen=True)
class BatchRecommendations:
    """What a batch export wrote: the file, how many users and rows, and the ids left out (no stored events)."""

    path: Path
    users: int
    rows: int
    skipped: list[str]
