"""Co-occurrence neighbours and interaction weights on Spark equal item-kNN's and build_interactions' in-process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pytest

from shopsense.features.interactions import build_interactions
from shopsense.models.itemknn import ItemKNN, ItemKNNConfig
from shopsense.models.popular import Popular, PopularConfig
from shopsense.settings import DEFAULT_EVENT_TYPES
from shopsense.spark.cooccurrence import similarity_matrix
from shopsense.spark.interactions import item_index, last_second, weighted_pairs
from shopsense.spark.popularity import popularity

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

WEIGHTS = dict(DEFAULT_EVENT_TYPES)


def test_decayed_weights_equal_build_interactions(
    spark_events: DataFrame, shop_tables: tuple[pa.Table, pa.Table]
) -> None:
    end = last_second(spark_events)
    assert end is not None
    as_of = end - 5 * 86_400
    expected = build_interactions(
        shop_tables[0], WEIGHTS, half_life_days=14.0, as_of=datetime.fromtimestamp(as_of, UTC)
    )
    pairs = weighted_pairs(spark_events, WEIGHTS, half_life_days=14.0, as_of=as_of).toArrow()
    items = item_index(spark_events)
    assert list(items.values) == list(expected.items.values)
    rows = np.array(expected.users.index(pairs.column("user_id").to_pylist()))
    cols = np.array(expected.items.index(pairs.column("item_id").to_pylist()))
    assert (rows >= 0).all() and (cols >= 0).all()
    assert len(rows) == expected.matrix.nnz
    np.testing.assert_allclose(
        pairs.column("weight").to_numpy(), np.asarray(expected.matrix[rows, cols]).ravel(), rtol=1e-9
    )


@pytest.mark.parametrize(
    "config", [ItemKNNConfig(), ItemKNNConfig(neighbours=10, shrinkage=2.0, asymmetry=0.7, binary=True)]
)
def test_cooccurrence_neighbours_equal_item_knn(
    spark_events: DataFrame, shop_tables: tuple[pa.Table, pa.Table], config: ItemKNNConfig
) -> None:
    data = build_interactions(shop_tables[0], WEIGHTS)
    expected = ItemKNN(config).fit(data).similarity_.tocsr()
    got = similarity_matrix(weighted_pairs(spark_events, WEIGHTS), item_index(spark_events), config).tocsr()
    assert got.shape == expected.shape and got.nnz == expected.nnz > 0
    for i in range(expected.shape[0]):
        want, have = expected[i], got[i]
        assert set(want.indices) == set(have.indices), f"neighbours of item {i}"
    np.testing.assert_allclose(got.toarray(), expected.toarray(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "config", [PopularConfig(), PopularConfig(by="users"), PopularConfig(half_life_days=7.0, window_days=30.0)]
)
def test_popularity_and_trending_equal_popular(
    spark_events: DataFrame, shop_tables: tuple[pa.Table, pa.Table], config: PopularConfig
) -> None:
    data = build_interactions(shop_tables[0], WEIGHTS)
    expected = Popular(config).fit(data).popularity_
    assert data.as_of is not None
    got = popularity(spark_events, weighted_pairs(spark_events, WEIGHTS), data.items, config, WEIGHTS, data.as_of)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
