"""Clustering recovers planted customer groups and describes them in words that match how they were planted."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from shopsense.errors import ConfigError
from shopsense.marketing.clustering import ClusterConfig, cluster_customers

SIZES = (150, 100, 50)  # regulars, lapsed bargain hunters, big spenders


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # k-means' OpenMP threads spin-wait; on a shared 2-core runner that turns 0.2 s into 10 s.
    with threadpool_limits(limits=1):
        yield


def _planted(seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), SIZES)

    def draw(centres: tuple[float, float, float], spread: float) -> np.ndarray:
        return np.concatenate([rng.normal(c, spread * abs(c) + 0.01, n) for c, n in zip(centres, SIZES, strict=True)])

    monetary = draw((500.0, 60.0, 4000.0), 0.2)
    recency = draw((45.0, 300.0, 8.0), 0.2).clip(0)
    frequency = draw((6.0, 1.0, 25.0), 0.15).clip(1)
    store = draw((0.3, 0.1, 0.8), 0.1).clip(0, 1)
    recency[[3, 160, 290]] = np.nan
    table = pa.table(
        {
            "user_id": [f"u{i}" for i in range(len(truth))],
            "recency_days": recency,
            "frequency": frequency,
            "monetary": monetary,
            "channel_store": store,
            "preferred_channel": np.where(store > 0.5, "store", "web"),
        }
    )
    return table, truth


def test_recovers_three_planted_groups_and_names_the_big_spenders() -> None:
    profiles, truth = _planted()
    result = cluster_customers(profiles, ClusterConfig(max_terms=4))
    assert result.k == 3
    assert max(result.silhouettes, key=result.silhouettes.__getitem__) == 3
    assert adjusted_rand_score(truth, result.labels) > 0.9
    assert result.features == ("recency_days", "frequency", "monetary", "channel_store")
    rows = result.descriptions.to_pylist()
    # Numbered largest first; one imputed recency may move a customer between the two smaller groups.
    assert np.abs(np.array([row["customers"] for row in rows]) - SIZES).max() <= 1
    big = rows[2]
    assert big["mean_monetary"] > 3000
    assert "high spend" in big["description"].lower() and "x average" in big["description"]
    assert "recent (recency" in big["description"]
    lapsed = rows[1]
    assert "inactive" in lapsed["description"].lower() and " d vs " in lapsed["description"]
    assert lapsed["z_recency_days"] > 1.0 and big["z_monetary"] > 1.0
    assert len({row["name"] for row in rows}) == 3


def test_unknown_values_are_imputed_with_the_median_and_reported() -> None:
    profiles, _ = _planted()
    result = cluster_customers(profiles)
    assert len(result.notes) == 1
    assert result.notes[0].startswith("recency_days: 3 unknown value(s) replaced by the median")


def test_same_seed_same_clusters_and_a_fixed_k_is_obeyed() -> None:
    profiles, _ = _planted()
    config = ClusterConfig(features=("monetary", "recency_days"), k=2, seed=3)
    first, second = cluster_customers(profiles, config), cluster_customers(profiles, config)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.k == 2 and first.silhouettes == {}
    assert first.descriptions.column_names[:5] == ["cluster", "name", "description", "customers", "share"]
    assert sum(first.descriptions.column("share").to_pylist()) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning")
def test_identical_customers_form_one_typical_cluster_without_crashing() -> None:
    profiles = pa.table({"monetary": [10.0] * 6, "frequency": [2.0] * 6})
    result = cluster_customers(profiles, ClusterConfig(k_range=(2, 3)))
    assert result.silhouettes == {2: -1.0, 3: -1.0}
    assert result.descriptions.column("description").to_pylist() == ["Close to average on every feature"]


def test_bad_configuration_is_refused_with_the_reason() -> None:
    profiles, _ = _planted()
    with pytest.raises(ConfigError, match="'monetry' is not a profile column"):
        cluster_customers(profiles, ClusterConfig(features=("monetry",)))
    with pytest.raises(ConfigError, match="'preferred_channel' has type string"):
        cluster_customers(profiles, ClusterConfig(features=("preferred_channel",)))
    with pytest.raises(ConfigError, match="at least 3 customers"):
        cluster_customers(profiles.slice(0, 2))
    with pytest.raises(ConfigError, match="no known value: monetary"):
        cluster_customers(profiles.set_column(3, "monetary", pa.array([np.nan] * profiles.num_rows)))
    with pytest.raises(ConfigError, match="k=400 clusters asked for 300 customers"):
        cluster_customers(profiles, ClusterConfig(k=400))
    with pytest.raises(ValidationError, match="k_range"):
        ClusterConfig(k_range=(5, 3))
