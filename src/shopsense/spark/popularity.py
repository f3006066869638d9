"""Popularity and trending on Spark: the learned state of ``models.popular.Popular``, item-aligned on the driver.

All-time popularity sums the positive pair weights (or counts the users) per item. Trending decays every
event by its age from ``as_of`` (whole seconds) with a half-life, counts only a recent window if one is
set, and breaks ties by all-time reach scaled below one event, exactly as in-process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shopsense.domain import IdIndex
from shopsense.models.popular import PopularConfig
from shopsense.spark.interactions import indexed, type_weight

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def _per_item(frame: DataFrame, value: str, n_items: int) -> np.ndarray:
    """A (i, value) frame summed into an item-aligned float array."""
    from pyspark.sql import functions as F

    table = frame.groupBy("i").agg(F.sum(value).alias("v")).toArrow()
    out = np.zeros(n_items)
    at = np.asarray(table.column("i").to_numpy(zero_copy_only=False), dtype=np.int64)
    out[at] = np.asarray(table.column("v").to_numpy(zero_copy_only=False), dtype=float)
    return out


def popularity(
    events: DataFrame,
    pairs: DataFrame,
    items: IdIndex,
    config: PopularConfig,
    weights: dict[str, float],
    as_of: int,
) -> np.ndarray:
    """``Popular(config).popularity_`` over these events and pairs (``as_of``: the fit's epoch second)."""
    from pyspark.sql import functions as F

    n = len(items)
    ipairs = indexed(pairs, items)
    reach = _per_item(ipairs.withColumn("one", F.lit(1.0)), "one", n)
    if config.window_days is None and config.half_life_days is None:
        return _per_item(ipairs, "weight", n) if config.by == "weight" else reach
    age_days = (F.lit(as_of) - F.floor(F.col("ts_us") / 1_000_000)) / 86_400
    weight = type_weight(weights)
    if config.half_life_days is not None:
        weight = F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / F.lit(float(config.half_life_days)))
    if config.window_days is not None:
        weight = F.when(age_days <= F.lit(float(config.window_days)), weight).otherwise(F.lit(0.0))
    recent = _per_item(indexed(events, items).select("i", weight.alias("w")), "w", n)
    out: np.ndarray = recent + 1e-6 * reach / max(reach.max(initial=0), 1)
    return out
