"""MLlib ALS (implicit feedback) ranks held-out interactions within 5% NDCG@10 of implicit's ALS on one time split."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopsense.eval.metrics import ndcg
from shopsense.features.interactions import Interactions, build_interactions
from shopsense.models.als import ALS, ALSConfig
from shopsense.models.base import Recommender, RecQuery
from shopsense.models.popular import Popular
from shopsense.settings import DEFAULT_EVENT_TYPES
from shopsense.spark.als import fit_als
from shopsense.spark.events import normalised
from shopsense.spark.interactions import weighted_pairs

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

WEIGHTS = dict(DEFAULT_EVENT_TYPES)


def _ndcg(model: Recommender, history: Interactions, truth: object) -> float:
    items = model.recommend(RecQuery(history, 10, exclude=history.matrix)).items
    return float(ndcg(items, truth, 10).mean())  # type: ignore[arg-type]


def test_spark_als_within_five_percent_of_implicit(spark: SparkSession, shop_tables: tuple[pa.Table, pa.Table]) -> None:
    events = shop_tables[0]
    micros = pc.cast(events.column("timestamp"), pa.int64()).to_numpy()
    cut = np.quantile(micros, 0.85)
    train, test = events.filter(pa.array(micros < cut)), events.filter(pa.array(micros >= cut))
    data = build_interactions(train, WEIGHTS)
    held = build_interactions(test, WEIGHTS, items=data.items, users=data.users).matrix.tocsr()
    held.data[:] = 1
    rows = np.flatnonzero(held.getnnz(axis=1) > 0)
    history, truth = data.rows(rows), held[rows]
    config = ALSConfig(factors=32, iterations=15)
    implicit_ndcg = _ndcg(ALS(config).fit(data), history, truth)
    pairs = weighted_pairs(normalised(spark.createDataFrame(train)), WEIGHTS)
    spark_ndcg = _ndcg(fit_als(pairs, data.items, config), history, truth)
    popular_ndcg = _ndcg(Popular().fit(data), history, truth)
    assert implicit_ndcg > 1.2 * popular_ndcg, "the fixture must be one where factor models learn"
    assert spark_ndcg >= 0.95 * implicit_ndcg, (spark_ndcg, implicit_ndcg)
