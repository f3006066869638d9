"""``--engine spark`` end to end through the CLI, as the README's "Training on Spark" runs it.

Seeded synthetic data (400 customers, 120 items, 20,000 events over 60 days: enough for the heads to learn) is
imported into two data directories; one goes through ``export events --partition-by date`` → ``train --engine
spark --master local[2] --events`` → ``profiles build --engine spark`` → ``segment … --engine spark --export``,
the other through the same commands in-process. The Spark bundle is then served by the API app, in process.

The CLI runs in this process, so its jobs find the test session's Spark session (``tests/unit/spark/conftest.py``,
``local[2]``) active and reuse it rather than start their own; the session must still work after each command
(a job stops only a session it started). Without pyspark or Java the test is skipped; under ``CI=true`` it fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shopsense.cli import app
from shopsense.services.data import DataService
from shopsense.settings import load_settings
from tests.unit.api.conftest import make_api
from tests.unit.spark.conftest import spark  # noqa: F401  (the shared session fixture)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

runner = CliRunner()
SEGMENTS = ("vip=monetary > 150 and recency_days <= 14", "lapsed=recency_days > 21", "loyal=orders >= 3")


def _ok(data: Path, *args: str) -> str:
    """Run ``shopsense --data-dir DATA ARGS…``; its stdout, after checking it exited 0 without a traceback."""
    result = runner.invoke(app, ["--data-dir", str(data), *args])
    said = f"shopsense {' '.join(args)} exited {result.exit_code}:\n{result.stdout}\n{result.stderr}"
    assert result.exit_code == 0, said
    assert "Traceback" not in result.stderr, said
    return result.stdout


def _profiles(data: Path) -> pa.Table:
    service = DataService(load_settings(None, data_dir=data))
    try:
        profiles = service.store.load_profiles()
    finally:
        service.close()
    assert profiles is not None
    return profiles.sort_by("user_id")


def _members(path: Path) -> set[tuple[Any, Any]]:
    table = pq.read_table(path)
    return set(zip(table.column("user_id").to_pylist(), table.column("segment").to_pylist(), strict=True))


@pytest.mark.integration
def test_spark_engine_from_import_to_served_answers(spark: SparkSession, tmp_path: Path) -> None:  # noqa: F811
    generated, on_spark, in_process = tmp_path / "generated", tmp_path / "spark", tmp_path / "local"
    _ok(on_spark, "generate", "--out", str(generated), "--users", "400", "--items", "120", "--events", "20000",
        "--days", "60", "--seed", "3")  # fmt: skip
    for data in (on_spark, in_process):
        _ok(data, "import", "items", str(generated / "items.parquet"))
        _ok(data, "import", "events", str(generated / "events.parquet"))

    events = tmp_path / "events"
    _ok(on_spark, "export", "events", str(events), "--partition-by", "date")
    days = sorted(p.name for p in events.iterdir() if p.is_dir())
    assert len(days) >= 50 and all(d.startswith("date=") for d in days), days

    spark_args = ("--engine", "spark", "--master", "local[2]", "--events", str(events))
    trained = json.loads(_ok(on_spark, "train", *spark_args, "--json"))
    assert spark.range(3).count() == 3, "the CLI left the shared session running"
    print(json.dumps(trained, indent=1))
    assert trained["events"] == 20_000 and trained["items"] > 0
    assert trained["heads"]["chosen"]

    built = json.loads(_ok(on_spark, "profiles", "build", *spark_args, "--json"))
    expected = json.loads(_ok(in_process, "profiles", "build", "--json"))
    print(built, expected)
    assert built["customers"] == expected["customers"] > 0
    assert built["lifecycle"] == expected["lifecycle"]
    got, want = _profiles(on_spark), _profiles(in_process)
    assert got.column("user_id").equals(want.column("user_id"))
    for name in ("frequency", "orders"):  # counts: exact
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    for name in ("monetary", "recency_days"):  # floats to 1e-9; NaN (no purchase yet) on both sides alike
        np.testing.assert_allclose(
            np.asarray(got.column(name).to_numpy(zero_copy_only=False), float),
            np.asarray(want.column(name).to_numpy(zero_copy_only=False), float),
            rtol=1e-9,
            err_msg=name,
        )

    stats = json.loads(_ok(on_spark, "segment", *SEGMENTS, "--engine", "spark", "--master", "local[2]", "--json",
                           "--export", str(tmp_path / "spark.parquet")))  # fmt: skip
    local = tmp_path / "local.parquet"
    local_stats = json.loads(_ok(in_process, "segment", *SEGMENTS, "--json", "--export", str(local)))
    print(stats)
    assert [row["segment"] for row in stats] == [row["segment"] for row in local_stats]
    for row, expected_row in zip(stats, local_stats, strict=True):  # sums in another order: equal to 1e-9
        numbers = {key: value for key, value in expected_row.items() if key != "segment"}
        assert row.keys() == expected_row.keys(), row["segment"]
        assert {key: row[key] for key in numbers} == pytest.approx(numbers, rel=1e-9), row["segment"]
    assert _members(tmp_path / "spark.parquet") == _members(local)
    assert spark.range(3).count() == 3

    catalogue = set(pq.read_table(generated / "items.parquet").column("item_id").to_pylist())
    user = pq.read_table(generated / "events.parquet").column("user_id")[0].as_py()
    for api in make_api(on_spark):
        answer = api.client.get(f"/v1/recommendations?user_id={user}&k=5", headers=api.headers("recommend:read"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        print(body)
        assert body["model_version"] == trained["version"]
        items = [item["item_id"] for item in body["items"]]
        assert len(items) == 5 and set(items) <= catalogue
