"""Profiles built on Spark equal the in-process engine's on the same events: counts and sums exact, floats to 1e-9."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shopsense.features.profiles import build_profiles
from shopsense.spark.profiles import build_profiles as spark_profiles

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

EXACT = ("user_id", "as_of", "frequency", "r_score", "f_score", "m_score", "rfm_segment", "orders", "lifecycle")


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.cast(column, pa.float64()), np.nan).to_numpy(zero_copy_only=False), dtype=float)


@pytest.mark.parametrize("cut_days", [0, 20])
def test_spark_profiles_equal_in_process(
    spark_events: DataFrame, shop_tables: tuple[pa.Table, pa.Table], cut_days: int
) -> None:
    events, items = shop_tables
    as_of = pc.max(events.column("timestamp")).as_py() + timedelta(seconds=1) - timedelta(days=cut_days)
    expected = build_profiles(events.filter(pc.less(events["timestamp"], pa.scalar(as_of))), items, as_of)
    got = spark_profiles(spark_events, items, as_of)
    assert got.schema == expected.schema
    assert got.schema.metadata == expected.schema.metadata
    assert got.num_rows == expected.num_rows > 100
    for name in EXACT:
        assert got.column(name).equals(expected.column(name)), name
    for name in expected.column_names:
        if name in EXACT or name == "interests":
            continue
        want, have = expected.column(name), got.column(name)
        if pa.types.is_floating(want.type) or pa.types.is_integer(want.type):
            np.testing.assert_allclose(_numbers(have), _numbers(want), rtol=1e-9, atol=1e-9, err_msg=name)
        else:
            assert have.equals(want), name
    for mine, theirs in zip(got.column("interests").to_pylist(), expected.column("interests").to_pylist(), strict=True):
        assert [e["tag"] for e in mine] == [e["tag"] for e in theirs]
        np.testing.assert_allclose([e["weight"] for e in mine], [e["weight"] for e in theirs], rtol=1e-9, atol=1e-12)
