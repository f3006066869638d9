"""Item co-occurrence on Spark: item-kNN's asymmetric cosine with shrinkage, top-N neighbours per item.

``sim(i, j) = co(i, j) / (|i|^2a * |j|^2(1-a) + shrinkage)`` where ``co`` sums, over users, the product of
their weights on both items (1 each with ``binary``), exactly ``models.neighbours.neighbour_similarity``; the
self-join on users runs on the executors and only the kept neighbours reach the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from shopsense.domain import IdIndex
from shopsense.models.itemknn import ItemKNNConfig
from shopsense.spark.interactions import indexed

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def neighbours(pairs: DataFrame, items: IdIndex, config: ItemKNNConfig) -> DataFrame:
    """(i, j, sim): the ``config.neighbours`` most similar items j of every item i (no self), best first."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    value = F.lit(1.0) if config.binary else F.col("weight").cast("double")
    x = indexed(pairs, items).select("user_id", "i", value.alias("v"))
    norms = x.groupBy("i").agg(F.sum(F.col("v") * F.col("v")).alias("sq"))
    left, right = x.alias("a"), x.alias("b")
    co = (
        left.join(right, "user_id")
        .where(F.col("a.i") != F.col("b.i"))
        .groupBy(F.col("a.i").alias("i"), F.col("b.i").alias("j"))
        .agg(F.sum(F.col("a.v") * F.col("b.v")).alias("co"))
    )
    a = float(config.asymmetry)
    sims = (
        co.join(F.broadcast(norms), "i")
        .join(F.broadcast(norms.withColumnRenamed("i", "j").withColumnRenamed("sq", "sq_j")), "j")
        .select(
            "i",
            "j",
            (
                F.col("co") / (F.pow("sq", F.lit(a)) * F.pow("sq_j", F.lit(1.0 - a)) + F.lit(float(config.shrinkage)))
            ).alias("sim"),
        )
    )
    rank = F.row_number().over(Window.partitionBy("i").orderBy(F.col("sim").desc(), F.col("j")))
    return sims.withColumn("rank", rank).where(F.col("rank") <= config.neighbours).drop("rank")


def similarity_matrix(pairs: DataFrame, items: IdIndex, config: ItemKNNConfig) -> sp.csr_matrix:
    """The item x item ``similarity_`` of a fitted ``ItemKNN``: the kept neighbours as a CSR matrix."""
    table = neighbours(pairs, items, config).toArrow()
    n = len(items)
    rows, cols, sims = (np.asarray(table.column(c).to_numpy(zero_copy_only=False)) for c in ("i", "j", "sim"))
    return sp.csr_matrix((sims.astype(np.float64), (rows.astype(np.int64), cols.astype(np.int64))), shape=(n, n))
