"""A Spark job reads a PostgreSQL store directly over JDBC and builds the profiles the in-process engine builds.

Needs PostgreSQL 15+ (tests/postgres.py: skipped without it, failed under CI=true) and the PostgreSQL JDBC
driver jar (it is not a Python package, ``spark.jdbc_jar`` names it; ``make test`` installs Debian's
``libpostgresql-jdbc-java`` when missing). Without the jar the test is skipped with one line, and fails under
``CI=true``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsense.domain import RecordKind
from shopsense.services.data import DataService
from shopsense.services.marketing import MarketingService
from shopsense.services.spark_jobs import SparkJobs
from shopsense.settings import load_settings
from tests.conftest import load
from tests.postgres import in_ci
from tests.unit.spark.conftest import TEST_CONFIG

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_profiles_from_postgresql_over_jdbc(
    spark: SparkSession, postgres_url: str, shop_tables: tuple[pa.Table, pa.Table], tmp_path: Path
) -> None:
    if TEST_CONFIG.jdbc_jar is None:
        missing = "no PostgreSQL JDBC driver jar (apt-get install -y libpostgresql-jdbc-java, or one in ~/.m2)"
        if in_ci():
            pytest.fail(f"the JDBC test cannot run under CI=true: {missing}")
        pytest.skip(f"JDBC TEST SKIPPED: {missing}")
    events, items = shop_tables
    pq.write_table(items, tmp_path / "items.parquet")
    pq.write_table(events.slice(0, 5_000), tmp_path / "events.parquet")
    settings = load_settings(None, data_dir=tmp_path / "data", store_url=postgres_url)
    service = DataService(settings.model_copy(update={"spark": TEST_CONFIG}))
    try:
        load(service, tmp_path / "items.parquet", RecordKind.ITEMS)
        load(service, tmp_path / "events.parquet")
        expected = MarketingService(service.settings, service.store).build_profiles()
        got = SparkJobs(service).build_profiles()
    finally:
        service.close()
    assert got.column("user_id").equals(expected.column("user_id"))
    for name in ("frequency", "orders", "monetary", "recency_days"):
        np.testing.assert_allclose(
            np.asarray(got.column(name).to_numpy(), float), np.asarray(expected.column(name).to_numpy(), float), 1e-9
        )
