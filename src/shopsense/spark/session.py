"""The Spark session of a batch job, built from a master URL (``local[2]``, ``spark://…``, ``yarn``, ``k8s://…``).

pyspark is imported here, when a job starts, never when shopsense is imported: the CLI stays light and a
machine without the ``spark`` extra runs everything else.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from shopsense.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

INSTALL_HINT = "install the Spark extra (pip install 'shopsense[spark]') and Java 17+ (java on PATH or JAVA_HOME)"


class SparkConfig(BaseModel):
    """Where a Spark job runs and how it is sized; ``[spark]`` in the settings file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    master: str = Field("local[2]", description="Spark master URL: local[N], spark://host:7077, yarn, k8s://…")
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions: about 2-3 per core")
    driver_memory: str = Field("4g", description="spark.driver.memory (local mode: the whole job's heap)")
    sample_users: int = Field(
        20_000, ge=100, description="users of the labelled sample drawn on Spark that the ranker's heads learn from"
    )
    jdbc_jar: str | None = Field(None, description="PostgreSQL JDBC driver jar, to read a postgresql:// store")
    conf: dict[str, str] = Field(default_factory=dict, description="any other spark.* settings, passed as given")


def java_available() -> bool:
    """Whether a Java runtime is on PATH or under JAVA_HOME (Spark needs one for its driver)."""
    home = os.environ.get("JAVA_HOME")
    return shutil.which("java") is not None or bool(home and os.path.exists(os.path.join(home, "bin", "java")))


def spark_available() -> str | None:
    """None when pyspark and Java are both there, else what is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return f"pyspark is not installed: {INSTALL_HINT}"
    if not java_available():
        return f"no Java runtime found: {INSTALL_HINT}"
    return None


def start_session(config: SparkConfig, app_name: str = "shopsense") -> SparkSession:
    """A Spark session on ``config.master`` with UTC time, small shuffles and Arrow transfers to the driver.

    Raises:
        ConfigError: pyspark or Java is missing.
    """
    missing = spark_available()
    if missing:
        raise ConfigError(missing)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(config.master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(config.shuffle_partitions))
        .config("spark.default.parallelism", str(config.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", config.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
    )
    if config.jdbc_jar:
        builder = builder.config("spark.jars", config.jdbc_jar)
    for key, value in config.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
