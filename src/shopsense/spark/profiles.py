"""Customer profiles on Spark: the per-user aggregates of ``features.profiles`` computed on the executors.

Everything that reads events runs on Spark (first/last purchase, orders, bought and returned value, the
median unit price, time-decayed interest tags, channel counts); one row per customer comes back and is
finished by :func:`shopsense.features.profiles.finish_profiles`, the in-process engine's own code for RFM
quintiles, lifecycle, price bands and channel shares. CLV and churn are fitted on the purchases and
returns (with the earliest event, which fixes the history's span), the only events they read.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from shopsense.errors import ConfigError
from shopsense.features.clv import DAY_US, as_of_micros
from shopsense.features.profiles import ProfileConfig, finish_profiles
from shopsense.spark.events import events_table
from shopsense.spark.interactions import type_weight

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def _flag(types: tuple[str, ...]) -> Column:
    from pyspark.sql import functions as F

    return F.coalesce(F.col("type").isin(list(types)), F.lit(False))


def catalogue_frame(items: pa.Table, spark: object) -> DataFrame:
    """Item id, category path (trimmed, empty levels dropped) and brand, as ``features.profiles._catalogue``."""
    from pyspark.sql import functions as F

    category = items.column("category")
    if pa.types.is_string(category.type) or pa.types.is_large_string(category.type):
        category = pc.split_pattern(category, ">")
    table = pa.table(
        {
            "item_id": pc.cast(items.column("item_id"), pa.string()),
            "category": pc.cast(category, pa.list_(pa.string())),
            "brand": pc.cast(items.column("brand"), pa.string()),
        }
    )
    frame: DataFrame = spark.createDataFrame(table)  # type: ignore[attr-defined]
    path = F.filter(F.transform(F.col("category"), lambda c: F.trim(c)), lambda c: c != F.lit(""))
    return frame.select("item_id", F.coalesce(path, F.array().cast("array<string>")).alias("path"), "brand")


def profile_aggregates(history: DataFrame, catalogue: DataFrame, config: ProfileConfig, end: int) -> DataFrame:
    """One row per user: ``_BASE``'s columns (first_event … unit_price, interests), ordered by user_id."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    decay = F.pow(F.lit(0.5), (F.lit(end) - F.col("ts_us")) / F.lit(float(DAY_US)) / config.interest_half_life_days)
    h = history.withColumn("w", type_weight(config.interest_weights) * decay)
    h = h.withColumn("is_p", _flag(config.purchase_types)).withColumn("is_r", _flag(config.return_types))
    weighted = h.where(F.col("w") != 0).join(catalogue, "item_id").select("user_id", "w", "brand", "path")
    depth = F.posexplode(F.col("path"))
    categories = (
        weighted.where(F.size("path") > 0)
        .select("user_id", "w", "path", depth.alias("d", "level"))
        .select(
            "user_id",
            F.lit("category").alias("kind"),
            F.concat(F.lit("category:"), F.array_join(F.slice("path", 1, F.col("d") + 1), "/")).alias("tag"),
            "w",
        )
    )
    brands = weighted.where(F.coalesce(F.trim("brand"), F.lit("")) != "").select(
        "user_id", F.lit("brand").alias("kind"), F.concat(F.lit("brand:"), F.trim("brand")).alias("tag"), "w"
    )
    scored = categories.unionByName(brands).groupBy("user_id", "kind", "tag").agg(F.sum("w").alias("score"))
    order = Window.partitionBy("user_id", "kind").orderBy(F.col("score").desc(), F.col("tag"))
    top = scored.where(F.col("score") > 0).withColumn("r", F.row_number().over(order))
    top = top.where(F.col("r") <= config.top_interests)
    top = top.withColumn("weight", F.col("score") / F.sum("score").over(Window.partitionBy("user_id", "kind")))
    entry = F.struct(
        F.when(F.col("kind") == "category", 0).otherwise(1).alias("k"),
        (-F.col("weight")).alias("nw"),
        F.col("tag").alias("tag"),
        F.col("weight").alias("weight"),
    )
    interests = top.groupBy("user_id").agg(F.sort_array(F.collect_list(entry)).alias("e"))
    interests = interests.select(
        "user_id",
        F.transform("e", lambda x: F.struct(x["tag"].alias("tag"), x["weight"].alias("weight"))).alias("interests"),
    )
    p, r = F.col("is_p"), F.col("is_r")
    order_key = F.coalesce(F.col("session_id"), F.col("ts_us").cast("string"))
    base = h.groupBy("user_id").agg(
        F.min("ts_us").alias("first_event"),
        F.min(F.when(p, F.col("ts_us"))).alias("first_purchase"),
        F.max(F.when(p, F.col("ts_us"))).alias("last_purchase"),
        F.count_distinct(F.when(p, order_key)).alias("orders"),
        F.coalesce(F.sum(F.when(p, F.col("value"))), F.lit(0.0)).alias("bought"),
        F.coalesce(F.sum(F.when(r, F.col("value"))), F.lit(0.0)).alias("returned"),
        F.median(F.when(p & (F.col("quantity") > 0), F.col("value") / F.col("quantity"))).alias("unit_price"),
    )
    return base.join(interests, "user_id", "left").orderBy("user_id")


def channel_counts(history: DataFrame) -> DataFrame:
    """(user_id, channel, n): events per normalised channel name, as ``features.profiles._CHANNELS``."""
    from pyspark.sql import functions as F

    name = F.regexp_replace(F.regexp_replace(F.lower("channel"), "[^a-z0-9]+", "_"), "^_+|_+$", "")
    named = history.where(F.coalesce(F.trim("channel"), F.lit("")) != "")
    return named.groupBy("user_id", name.alias("channel")).agg(F.count(F.lit(1)).alias("n"))


def build_profiles(
    events: DataFrame, items: pa.Table, as_of: datetime, config: ProfileConfig | None = None
) -> pa.Table:
    """The profile table of ``features.profiles.build_profiles`` for the events before ``as_of``, on Spark.

    Raises:
        ConfigError: the catalogue lacks its columns, or there is no event before ``as_of``.
    """
    from pyspark.sql import functions as F

    config = config or ProfileConfig()
    missing = [c for c in ("item_id", "category", "brand", "price") if c not in items.column_names]
    if missing:
        raise ConfigError(f"items: missing column(s) {missing}; pass the table scan_items() returns")
    end = as_of_micros(as_of)
    history = events.where(F.col("ts_us") < end).cache()
    try:
        first = history.agg(F.min("ts_us")).first()
        if first is None or first[0] is None:
            raise ConfigError(f"as_of {as_of.isoformat()} is at or before the first event: no history before it")
        base = profile_aggregates(history, catalogue_frame(items, events.sparkSession), config, end).toArrow()
        channels = channel_counts(history).toArrow()
        flags = _flag(config.purchase_types) | _flag(config.return_types) | (F.col("ts_us") == F.lit(int(first[0])))
        money = events_table(history.where(flags))
    finally:
        history.unpersist()
    base = base.cast(
        pa.schema(
            [
                pa.field(f.name, pa.int64())
                if f.name in ("first_event", "first_purchase", "last_purchase", "orders")
                else f
                for f in base.schema
            ]
        )
    )
    return finish_profiles(base, channels, money, items, as_of, config)
