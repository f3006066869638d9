"""A bundle trained on Spark is written where the in-process one goes and served by the API unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from shopsense.services.data import DataService
from shopsense.services.spark_jobs import SparkInput, SparkJobs
from shopsense.settings import load_settings
from tests.unit.api.conftest import make_api
from tests.unit.spark.conftest import TEST_CONFIG

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_spark_bundle_is_served(
    spark: SparkSession, trained: Path, shop_tables: tuple[pa.Table, pa.Table], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    settings = load_settings(None, data_dir=data).model_copy(update={"spark": TEST_CONFIG})
    service = DataService(settings)
    try:
        jobs = SparkJobs(service)
        folder = tmp_path / "events"
        assert jobs.export_events(folder) == shop_tables[0].num_rows
        assert any(p.name.startswith("date=") for p in folder.iterdir())
        result = jobs.train("default", SparkInput(folder))
    finally:
        service.close()
    assert result.bundle.to_dict()["metrics"]["engine"] == "spark"
    spark_facts = result.bundle.to_dict()["metrics"]["spark"]
    assert set(spark_facts["fitted_on_spark"]) == {"trending", "co_bought", "taste"}
    user = shop_tables[0].column("user_id")[0].as_py()
    item = shop_tables[0].column("item_id")[0].as_py()
    for api in make_api(data):
        answer = api.client.get(f"/v1/recommendations?user_id={user}&k=5", headers=api.headers("recommend:read"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == result.bundle.version
        assert len(body["items"]) == 5
        similar = api.client.get(f"/v1/items/{item}/similar?k=5", headers=api.headers("recommend:read"))
        assert similar.status_code == 200, similar.text
