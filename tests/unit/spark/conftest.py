"""One Spark session (``local[2]``) for every Spark test, and the synthetic shop's events on it.

Without pyspark or Java the Spark tests are skipped with one line saying what is missing; under
``CI=true`` that is a failure, never a skip (as for PostgreSQL, ``tests/postgres.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from shopsense.spark.session import SparkConfig, spark_available, start_session
from tests.postgres import in_ci

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEBIAN_JDBC_JAR = Path("/usr/share/java/postgresql.jar")
"""Where Debian's ``libpostgresql-jdbc-java`` (installed by ``make test`` when missing) puts the driver."""
JDBC_JARS = [
    *sorted(Path.home().glob(".m2/repository/org/postgresql/postgresql/*/postgresql-*.jar")),
    *([DEBIAN_JDBC_JAR] if DEBIAN_JDBC_JAR.is_file() else []),
]
"""The PostgreSQL JDBC driver (not a Python package): Maven's copy, else Debian's; the last one found is used."""
TEST_CONFIG = SparkConfig(
    master="local[2]",
    shuffle_partitions=2,
    driver_memory="1g",
    sample_users=100_000,
    jdbc_jar=str(JDBC_JARS[-1]) if JDBC_JARS else None,
)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    missing = spark_available()
    if missing:
        if in_ci():
            pytest.fail(f"Spark tests cannot run under CI=true: {missing}")
        pytest.skip(f"SPARK TESTS SKIPPED: {missing}")
    session = start_session(TEST_CONFIG, "shopsense-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_events(spark: SparkSession, shop_tables: tuple[pa.Table, pa.Table]) -> Iterator[DataFrame]:
    """The synthetic shop's events as a cached Spark frame with ``ts_us``."""
    from shopsense.spark.events import normalised

    frame = normalised(spark.createDataFrame(shop_tables[0])).cache()
    yield frame
    frame.unpersist()
