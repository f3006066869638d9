"""SparkJobs: the batch side on Apache Spark — training, profiles and segment export over partitioned Parquet.

The facade the CLI calls for ``--engine spark``. Input is a day-partitioned Parquet folder of events
(``shopsense export events PATH --partition-by date`` writes it), a PostgreSQL store read over JDBC
(``spark.jdbc_jar`` set), or, when neither is named, the configured store exported to a temporary Parquet
folder first. Output goes where the in-process engine writes: a bundle version under ``<data_dir>/models``
(promoted, so ``shopsense serve`` and every replica switch to it) and the profiles table of the store.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError, ShopsenseError
from shopsense.features.profiles import ProfileConfig
from shopsense.marketing.segments import overlaps, segment_stats
from shopsense.services.bundles import Bundles
from shopsense.services.data import DataService
from shopsense.services.marketing import SegmentReport
from shopsense.services.recommendation import TrainResult, pipeline_config
from shopsense.spark.session import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparkInput:
    """Where a job reads events: a Parquet file or folder (path or URL), else the store (JDBC for PostgreSQL with
    ``spark.jdbc_jar`` set, else an export to a temporary Parquet folder)."""

    events: str | Path | None = None


class SparkJobs:
    """Batch jobs of one data directory and store, run on the Spark master of ``settings.spark`` or ``master``."""

    def __init__(self, data: DataService, bundles: Bundles | None = None, *, master: str | None = None) -> None:
        self.data = data
        self.bundles = bundles or Bundles.of(data.settings)
        config = data.settings.spark
        self.config: SparkConfig = config.model_copy(update={"master": master}) if master else config

    # -- input ----------------------------------------------------------------------------------

    def export_events(self, path: Path, partition_by: str = "date") -> int:
        """Write the store's events as a Parquet folder partitioned by day; returns the rows written."""
        from shopsense.spark.events import export_partitioned

        return export_partitioned(lambda flat: self.data.export(RecordKind.EVENTS, flat), path)

    @contextmanager
    def _events(self, spark: SparkSession, source: SparkInput) -> Iterator[DataFrame]:
        from shopsense.spark import events

        if source.events is not None:
            yield events.read_parquet(spark, source.events)
            return
        url = self.data.settings.resolved_store_url
        if url.startswith(("postgresql://", "postgres://")) and self.config.jdbc_jar:
            from shopsense.store.postgres import _EVENTS_VIEW

            yield events.read_jdbc(spark, url, _EVENTS_VIEW)
            return
        with tempfile.TemporaryDirectory(prefix="shopsense-spark-") as tmp:
            folder = Path(tmp) / "events"
            self.export_events(folder)
            yield events.read_parquet(spark, folder)

    @contextmanager
    def session(self) -> Iterator[SparkSession]:
        """The job's Spark session, stopped afterwards; an active one (``spark-submit``, a notebook) is reused as is."""
        from shopsense.spark.session import spark_available, start_session

        missing = spark_available()
        if missing:
            raise ConfigError(missing)
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            yield active
            return
        spark = start_session(self.config)
        try:
            yield spark
        finally:
            spark.stop()

    # -- jobs -----------------------------------------------------------------------------------

    def train(self, pipeline: str = "default", source: SparkInput = SparkInput()) -> TrainResult:
        """Fit a pipeline on Spark (see :mod:`shopsense.spark.training`) and save it as the served bundle."""
        from shopsense.spark.training import train_pipeline

        config = pipeline_config(self.data.settings, pipeline)
        weights = self.data.settings.event_types.weights
        read_at = datetime.now(UTC)
        items = self.data.store.scan_items()
        with self.session() as spark, self._events(spark, source) as events:
            started = time.perf_counter()
            try:
                fit = train_pipeline(events, items, config, weights, sample_users=self.config.sample_users)
            except ValueError as exc:
                raise ShopsenseError(f"pipeline {config.name!r} could not be trained on Spark: {exc}") from exc
            seconds = time.perf_counter() - started
            first, last = _time_range(events)
        fitted = fit.pipeline
        ranker = fitted.ranker
        training = {k: v for k, v in ranker.training_.items() if k != "feature_names"}
        training["repeat_share"] = fitted.repeat_share_
        training["exclude_purchased"] = fitted.rules.exclude_purchased
        spark_facts = {
            "master": self.config.master,
            "sample_users": fit.sample_users,
            "fitted_on_spark": list(fit.on_spark),
            "fitted_on_sample": list(fit.on_sample),
        }
        info = self.bundles.write(
            fitted,
            {
                "read_at": read_at.isoformat(),
                "data_from": first.isoformat(),
                "data_to": last.isoformat(),
                "events": fit.events,
                "users": fit.users,
                "items": len(fit.items),
                "metrics": {
                    "heads": ranker.heads_report_,
                    "training": training,
                    "seconds": round(seconds, 1),
                    "engine": "spark",
                    "spark": spark_facts,
                },
                "answers_k": 0,
                "answers_users": 0,
            },
        )
        self.bundles.promote(info)
        path = self.bundles.root / info.pipeline / info.version
        return TrainResult(info, path, seconds, ranker.heads_report_, training)

    def build_profiles(
        self, as_of: datetime | None = None, config: ProfileConfig | None = None, source: SparkInput = SparkInput()
    ) -> pa.Table:
        """Every customer's profile at ``as_of`` (default: just after the newest event), on Spark; stored."""
        from pyspark.sql import functions as F

        from shopsense.spark.profiles import build_profiles

        if as_of is not None and as_of.tzinfo is None:
            raise ConfigError("as_of needs a time zone, e.g. 2011-12-10T00:00:00Z")
        store = self.data.store
        guests = store.guest_user_ids()
        items = store.scan_items()
        with self.session() as spark, self._events(spark, source) as events:
            if guests:
                events = events.where(~F.col("user_id").isin(guests))
            if as_of is None:
                as_of = _time_range(events)[1] + timedelta(seconds=1)
            profiles = build_profiles(events, items, as_of.astimezone(UTC), config or ProfileConfig())
        store.save_profiles(profiles)
        return profiles

    def segments(self, definitions: dict[str, str]) -> SegmentReport:
        """Named segments of the stored profiles, each expression compiled to a Spark column expression."""
        from shopsense.spark.expressions import select_members

        if not definitions:
            raise ConfigError("give at least one segment: NAME=EXPRESSION")
        profiles = self.data.store.load_profiles()
        if profiles is None:
            raise ConfigError("no customer profiles yet: run `shopsense profiles build` first")
        with self.session() as spark:
            members = select_members(spark.createDataFrame(profiles), profiles.schema, definitions)
        users = profiles.column("user_id").to_numpy(zero_copy_only=False)
        masks = {name: np.isin(users, np.array(sorted(found), dtype=object)) for name, found in members.items()}
        return SegmentReport(segment_stats(profiles, masks), overlaps(masks), masks, users)


def _time_range(events: DataFrame) -> tuple[datetime, datetime]:
    """The first and the newest event's time (UTC)."""
    from pyspark.sql import functions as F

    row = events.agg(F.min("ts_us").alias("a"), F.max("ts_us").alias("b")).first()
    if row is None or row["a"] is None:
        raise ShopsenseError("there are no events: import some first")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + timedelta(microseconds=int(row["a"])), epoch + timedelta(microseconds=int(row["b"]))
