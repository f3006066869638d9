"""Events in and out of Spark: partitioned Parquet (``date=YYYY-MM-DD/``) or a PostgreSQL store over JDBC.

Every job reads the same columns the store's ``scan_events()`` returns (user_id, item_id, type,
timestamp in UTC, channel, session_id, quantity, value) and adds ``ts_us``, the epoch microseconds the
in-process engine computes with (``features.clv.event_micros``), so both measure ages alike.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from shopsense.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

EVENT_COLUMNS = ("user_id", "item_id", "type", "timestamp", "channel", "session_id", "quantity", "value")
"""What the Spark jobs read of each event (the rest of an export, e.g. ``context``, is left on disk)."""


def write_partitioned(source: Path, target: Path, partition_by: str = "date") -> int:
    """Rewrite one events Parquet file (``shopsense export events x.parquet``) as a Parquet folder partitioned by
    day (``date=2024-01-31/``), streaming record batches, so a Spark job reads only the days it needs.

    The folder is written beside ``target`` and renamed into place when complete.

    Raises:
        ConfigError: an unknown ``partition_by`` (only ``date`` is offered).
    """
    if partition_by != "date":
        raise ConfigError(f"--partition-by {partition_by!r}: events can be partitioned by 'date' only")
    schema = pq.read_schema(source)
    out_schema = schema.append(pa.field("date", pa.string()))
    rows = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for batch in pq.ParquetFile(source).iter_batches(batch_size=256_000):
            utc = pc.cast(batch.column("timestamp"), pa.timestamp("us", tz="UTC"))
            day = pc.strftime(utc, format="%Y-%m-%d")
            rows += batch.num_rows
            yield pa.RecordBatch.from_arrays([*batch.columns, day], schema=out_schema)

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    ds.write_dataset(
        batches(),
        partial,
        schema=out_schema,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
        existing_data_behavior="overwrite_or_ignore",
        max_rows_per_group=256_000,
    )
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    return rows


def export_partitioned(export: Callable[[Path], object], target: Path) -> int:
    """Export a store's events to a day-partitioned Parquet folder; ``export(path)`` writes one Parquet file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shopsense-export-", dir=target.parent) as tmp:
        flat = Path(tmp) / "events.parquet"
        export(flat)
        return write_partitioned(flat, target)


def read_parquet(spark: SparkSession, path: str | Path) -> DataFrame:
    """Events from a Parquet file or (partitioned) folder, with ``ts_us``; missing optional columns are null.

    Raises:
        ConfigError: the path does not exist or lacks user_id, item_id, type or timestamp.
    """
    if "://" not in str(path) and not Path(path).exists():
        raise ConfigError(
            f"events: {path} does not exist; write it with `shopsense export events PATH --partition-by date`"
        )
    return normalised(spark.read.parquet(str(path)))


def read_jdbc(spark: SparkSession, store_url: str, query: str) -> DataFrame:
    """Events straight from a PostgreSQL store over JDBC (``spark.jdbc_jar`` must name the driver jar)."""
    parts = urlsplit(store_url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"events over JDBC need a postgresql:// store, not {parts.scheme}://")
    port = f":{parts.port}" if parts.port else ""
    reader = (
        spark.read.format("jdbc")
        .option("url", f"jdbc:postgresql://{parts.hostname or 'localhost'}{port}{parts.path}")
        .option("query", query)
        .option("driver", "org.postgresql.Driver")
        .option("fetchsize", "50000")
    )
    if parts.username:
        reader = reader.option("user", unquote(parts.username))
    if parts.password:
        reader = reader.option("password", unquote(parts.password))
    return normalised(reader.load())


def normalised(frame: DataFrame) -> DataFrame:
    """The event columns every job reads, typed as ``scan_events()`` types them, plus ``ts_us``."""
    from pyspark.sql import functions as F

    missing = [c for c in ("user_id", "item_id", "type", "timestamp") if c not in frame.columns]
    if missing:
        raise ConfigError(f"events: missing column(s) {missing}")
    kinds = {"channel": "string", "session_id": "string", "quantity": "double", "value": "double"}
    columns = [F.col(c).cast("string").alias(c) for c in ("user_id", "item_id", "type")]
    columns.append(F.col("timestamp").cast("timestamp").alias("timestamp"))
    for name, kind in kinds.items():
        columns.append((F.col(name) if name in frame.columns else F.lit(None)).cast(kind).alias(name))
    out = frame.select(*columns)
    return out.withColumn("ts_us", F.unix_micros(F.col("timestamp")))


def events_table(frame: DataFrame) -> pa.Table:
    """A (small) Spark frame of events as the Arrow table ``scan_events()`` would return."""
    table = frame.select(*EVENT_COLUMNS).toArrow()
    utc = pc.cast(table.column("timestamp"), pa.timestamp("us", tz="UTC"))
    return table.set_column(table.schema.get_field_index("timestamp"), "timestamp", utc)
