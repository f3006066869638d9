"""A pipeline bundle trained on Spark, in the format ``shopsense serve`` loads (a pickled ``Pipeline``).

The candidate sources that read every event are fitted on Spark over all of them: popularity and
trending (:mod:`.popularity`), item co-occurrence with item-kNN's shrinkage (:mod:`.cooccurrence`) and
implicit ALS on MLlib (:mod:`.als`). The two-stage ranker's heads learn from a labelled sample: a seeded
hash sample of ``sample_users`` customers is drawn on Spark, their events come to the driver, and the
in-process pipeline is fitted on them over the full item vocabulary (label window, candidates, features,
LightGBM heads). The Spark-fitted sources then replace the sample-fitted ones, so the served candidates
see every event. Sources Spark does not fit (repeat-buy reads each request's own history; content,
EASE, SASRec…) keep their fit on the sample and are named in the bundle's ``metrics.spark``; so do the
ranker's pair features (item statistics, co-occurrence features), which describe the sample's events.
With ``sample_users`` at or above the number of customers the sample is every event, and the bundle
differs from an in-process one only by the Spark-fitted ALS factors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from shopsense.domain import IdIndex
from shopsense.features.interactions import build_interactions
from shopsense.models.als import ALSConfig
from shopsense.models.itemknn import ItemKNN, ItemKNNConfig
from shopsense.models.popular import Popular, PopularConfig
from shopsense.pipeline import Pipeline, PipelineConfig
from shopsense.spark.als import fit_als
from shopsense.spark.cooccurrence import similarity_matrix
from shopsense.spark.events import events_table
from shopsense.spark.interactions import item_index, last_second, weighted_pairs
from shopsense.spark.popularity import popularity

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)
SPARK_MODELS = ("popular", "item_knn", "als")
"""Candidate models whose learned state is fitted on Spark over every event."""


@dataclass(frozen=True)
class SparkFit:
    """A pipeline fitted on Spark and what the bundle manifest says about it."""

    pipeline: Pipeline
    items: IdIndex
    events: int
    users: int
    sample_users: int
    on_spark: tuple[str, ...]
    on_sample: tuple[str, ...]
    stages: dict[str, float]
    """Seconds per stage: ``sample`` (drawn on Spark, collected), ``heads`` (the in-process fit on the sample),
    ``sources`` (the every-event candidate sources on Spark)."""


def sample_events(events: DataFrame, users: int, seed: int) -> DataFrame:
    """The events of a seeded hash sample of ``users`` customers (all of them when there are fewer)."""
    from pyspark.sql import functions as F

    ranked = events.select("user_id").distinct().withColumn("h", F.xxhash64("user_id", F.lit(seed)))
    chosen = ranked.orderBy("h", "user_id").limit(users).select("user_id")
    return events.join(F.broadcast(chosen), "user_id")


def train_pipeline(
    events: DataFrame,
    items: pa.Table,
    config: PipelineConfig,
    weights: dict[str, float],
    *,
    sample_users: int,
) -> SparkFit:
    """Fit ``config`` with its every-event sources on Spark and its heads on a labelled sample.

    Raises:
        ValueError: the sample has nothing to learn the heads from (as an in-process fit would).
    """
    from pyspark.sql import functions as F

    events = events.cache()
    try:
        vocabulary = item_index(events)
        end = last_second(events)
        if end is None:
            raise ValueError("there are no events to train on")
        counts = events.agg(F.count(F.lit(1)).alias("n"), F.count_distinct("user_id").alias("u")).first()
        assert counts is not None
        log.info("drawing the labelled sample of %s users on Spark", f"{sample_users:,}")
        clock = time.perf_counter()
        sample = events_table(sample_events(events, sample_users, config.ranker.seed))
        drawn = len(set(sample.column("user_id").to_pylist()))
        stages = {"sample": time.perf_counter() - clock}
        clock = time.perf_counter()
        data = build_interactions(sample, weights, items=vocabulary, catalog=items)
        fitted = Pipeline(config).fit(data)
        stages["heads"] = time.perf_counter() - clock
        clock = time.perf_counter()
        pairs = weighted_pairs(events, weights).cache()
        on_spark, on_sample = [], []
        generator = fitted.ranker.generator_
        for index, (source, model) in enumerate(zip(generator.sources_, generator.models_, strict=True)):
            if source.model not in SPARK_MODELS:
                on_sample.append(source.name)
                continue
            log.info("fitting candidate source %s (%s) on Spark", source.name, source.model)
            generator.models_[index] = _fit_on_spark(model, events, pairs, vocabulary, weights, end + 1)
            on_spark.append(source.name)
        pairs.unpersist()
        stages["sources"] = time.perf_counter() - clock
    finally:
        events.unpersist()
    facts = (int(counts["n"]), int(counts["u"]), drawn, tuple(on_spark), tuple(on_sample), stages)
    return SparkFit(fitted, vocabulary, *facts)


def _fit_on_spark(
    model: Any, events: DataFrame, pairs: DataFrame, items: IdIndex, weights: dict[str, float], as_of: int
) -> Any:
    """A fitted model of the same kind and config as ``model``, its learned state computed on Spark."""
    if isinstance(model, Popular):
        fresh = Popular(PopularConfig.model_validate(model.config.model_dump()))
        fresh.popularity_ = popularity(events, pairs, items, fresh.config, weights, as_of)
        fresh.n_items_ = len(items)
        return fresh
    if isinstance(model, ItemKNN):
        knn = ItemKNN(ItemKNNConfig.model_validate(model.config.model_dump()))
        knn.similarity_ = similarity_matrix(pairs, items, knn.config)
        knn._similarity_t = None
        knn.n_items_ = len(items)
        return knn
    return fit_als(pairs, items, ALSConfig.model_validate(model.config.model_dump()))
