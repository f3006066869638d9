"""Interaction weights on Spark: the formula of ``features.interactions.build_interactions``.

Each event adds its type's weight (``event_types.weights``), decayed by age with an optional half-life
measured back from ``as_of`` in whole seconds; a (user, item) pair is kept when its total is positive.
The item vocabulary is the sorted distinct item ids, as ``np.unique`` orders them in-process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shopsense.domain import IdIndex

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def type_weight(weights: dict[str, float]) -> Column:
    """Each event's type weight; a type missing from ``weights`` counts 0."""
    from pyspark.sql import functions as F

    if not weights:
        return F.lit(0.0)
    pairs = [F.lit(x) for kind, w in sorted(weights.items()) for x in (kind, float(w))]
    return F.coalesce(F.create_map(*pairs)[F.col("type")], F.lit(0.0)).cast("double")


def last_second(events: DataFrame) -> int | None:
    """The newest event's epoch second (the in-process ``as_of`` when none is given), None without events."""
    from pyspark.sql import functions as F

    row = events.agg(F.max(F.floor(F.col("ts_us") / 1_000_000)).alias("s")).first()
    return None if row is None or row["s"] is None else int(row["s"])


def weighted_pairs(
    events: DataFrame, weights: dict[str, float], *, half_life_days: float | None = None, as_of: int | None = None
) -> DataFrame:
    """(user_id, item_id, weight): summed, decayed type weights of every pair whose total is positive.

    Args:
        events: events with ``ts_us`` (:func:`shopsense.spark.events.normalised`).
        weights: weight per event type.
        half_life_days: age at which an event counts half; None: no decay.
        as_of: epoch second ages are measured from (default: the newest event's).
    """
    from pyspark.sql import functions as F

    w = type_weight(weights)
    if half_life_days is not None:
        now = as_of if as_of is not None else last_second(events)
        seconds = F.floor(F.col("ts_us") / 1_000_000)
        age_days = F.greatest(F.lit(now) - seconds, F.lit(0)) / 86_400
        w = w * F.pow(F.lit(0.5), age_days / F.lit(float(half_life_days)))
    summed = events.groupBy("user_id", "item_id").agg(F.sum(w).alias("weight"))
    return summed.where(F.col("weight") > 0)


def item_index(events: DataFrame) -> IdIndex:
    """The item vocabulary: sorted distinct item ids (Spark sorts strings by UTF-8 bytes, as numpy by code point)."""
    rows = events.select("item_id").distinct().orderBy("item_id").toArrow()
    return IdIndex([str(v) for v in rows.column(0).to_pylist()])


def indexed(pairs: DataFrame, items: IdIndex, column: str = "item_id", name: str = "i") -> DataFrame:
    """``pairs`` with the dense item index of ``column`` as ``name`` (an inner join on a small lookup table)."""
    from pyspark.sql import functions as F

    table = pa.table({column: pa.array(list(items.values), pa.string()), name: np.arange(len(items), dtype=np.int32)})
    lookup = pairs.sparkSession.createDataFrame(table)
    return pairs.join(F.broadcast(lookup), column)
