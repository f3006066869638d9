"""The ``--engine``, ``--master`` and ``--events`` options the batch commands share, and the Spark jobs facade."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from shopsense.services.shop import Shop
    from shopsense.services.spark_jobs import SparkInput, SparkJobs


class Engine(StrEnum):
    """Where batch work runs: in this process, or on Apache Spark."""

    LOCAL = "local"
    SPARK = "spark"


EngineOpt = Annotated[
    Engine, typer.Option("--engine", help="local (in this process) or spark (needs the spark extra and Java 17+)")
]
MasterOpt = Annotated[
    str | None,
    typer.Option(
        "--master", help="Spark master URL: local[2] (default, settings spark.master), spark://host:7077, yarn, k8s://…"
    ),
]
EventsOpt = Annotated[
    str | None,
    typer.Option(
        "--events",
        help="with --engine spark: events as Parquet (`export events PATH --partition-by date`); default: the store",
    ),
]


def spark_jobs(shop: Shop, master: str | None) -> SparkJobs:
    """The Spark batch jobs of this shop's data directory and store (pyspark is imported only by a job)."""
    from shopsense.services.spark_jobs import SparkJobs

    return SparkJobs(shop.data, shop.bundles, master=master)


def spark_input(events: str | None) -> SparkInput:
    """Where a Spark job reads its events from."""
    from shopsense.services.spark_jobs import SparkInput

    return SparkInput(events)
