"""Customer clusters found in the profiles, each with a name and a description a marketer can read.

Rule segments need someone to know what to look for; clustering shows the groups that are there.
k-means (scikit-learn) runs on standardised numeric profile columns. Money and counts are heavily
skewed (a few customers spend 100x the median), so they are compressed with a signed log1p first,
or k-means would spend its clusters on outliers. Unknown values are replaced by the column median
and the result says how many. Without a given k, the k with the best silhouette over a range wins,
scored on a seeded sample because silhouette costs O(n^2). Clusters are numbered largest first and
described by the features whose cluster mean lies furthest from the population, in standard deviations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from shopsense.errors import ConfigError

DEFAULT_FEATURES = ("recency_days", "frequency", "monetary", "avg_order_value", "returns_share", "tenure_days")
"""Clustered when no features are configured (those present), with every ``channel_<name>`` share."""
LOG_FEATURES = ("recency_days", "frequency", "monetary", "avg_order_value", "orders", "clv_90d", "expected_avg_value")
"""Skewed money, count and recency columns, compressed with a signed log1p before scaling."""

# feature: (words when high, words when low, unit of the comparison, short label); words take a "very".
_WORDING: dict[str, tuple[str, str, str, str]] = {
    "monetary": ("high spend", "low spend", "x", "monetary"),
    "frequency": ("frequent", "infrequent", "x", "frequency"),
    "orders": ("high order count", "low order count", "x", "orders"),
    "avg_order_value": ("large baskets", "small baskets", "x", "order value"),
    "clv_90d": ("high predicted value", "low predicted value", "x", "CLV 90d"),
    "expected_avg_value": ("high expected order value", "low expected order value", "x", "expected value"),
    "recency_days": ("inactive", "recent", "d", "recency"),
    "first_purchase_days": ("long-time", "new", "d", "first purchase"),
    "tenure_days": ("long-standing", "new", "d", "tenure"),
    "returns_share": ("high returns", "low returns", "%", "returns"),
    "p_alive": ("likely active", "likely lost", "%", "P(alive)"),
    "churn_probability": ("high churn risk", "low churn risk", "%", "churn"),
}
VERY_Z = 1.5
"""A feature this many std devs from the mean is "very" high or low."""


class ClusterConfig(BaseModel):
    """Which profile columns are clustered, how k is chosen, and how descriptions are worded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: tuple[str, ...] | None = Field(None, description="numeric profile columns; None: the defaults present")
    log_features: tuple[str, ...] = Field(LOG_FEATURES, description="compressed with sign(x) * log1p(|x|)")
    k: int | None = Field(None, ge=2, description="number of clusters; None: best silhouette over k_range")
    k_range: tuple[int, int] = Field((2, 8), description="smallest and largest k tried")
    selection_sample: int = Field(20_000, ge=50, description="rows clustered with each k tried")
    silhouette_sample: int = Field(3_000, ge=50, description="rows of those scored by silhouette (cost O(n^2))")
    n_init: int = Field(4, ge=1, description="k-means restarts per k")
    seed: int = 0
    max_terms: int = Field(3, ge=1, description="features named in a description")
    min_z: float = Field(0.5, gt=0, description="a feature is named only this many std devs from the mean")

    @model_validator(mode="after")
    def _range(self) -> ClusterConfig:
        low, high = self.k_range
        if not 2 <= low <= high:
            raise ValueError(f"k_range must satisfy 2 <= low <= high, got {self.k_range}")
        return self


@dataclass(frozen=True)
class Clustering:
    """Cluster of every profile row (0 = largest) and one description row per cluster.

    ``descriptions`` holds ``cluster``, ``name``, ``description``, ``customers``, ``share``, then
    ``mean_<feature>`` (original units) and ``z_<feature>`` (cluster mean in population std devs).
    ``notes`` says what was imputed; ``silhouettes`` holds the score of each k tried.
    """

    labels: npt.NDArray[np.int64]
    features: tuple[str, ...]
    descriptions: pa.Table
    silhouettes: dict[int, float]
    notes: tuple[str, ...]

    @property
    def k(self) -> int:
        return int(self.descriptions.num_rows)


def cluster_customers(profiles: pa.Table, config: ClusterConfig | None = None) -> Clustering:
    """Group customers by k-means on their profile features and describe each group.

    Raises:
        ConfigError: a configured feature is missing or not numeric, a feature has no known value,
            or there are fewer than 3 customers (or fewer than k).
    """
    config = config or ClusterConfig()
    features = _features(profiles, config)
    raw = np.column_stack([pc.cast(profiles.column(f), pa.float64()).to_numpy() for f in features]).astype(float)
    filled, notes = _impute(raw, features)
    transformed = filled.copy()
    for j, name in enumerate(features):
        if name in config.log_features:
            transformed[:, j] = np.sign(filled[:, j]) * np.log1p(np.abs(filled[:, j]))
    scaled = StandardScaler().fit_transform(transformed)
    labels, silhouettes = _kmeans(scaled, config)
    # Renumber largest first (ties by old id) so cluster 0 is always the biggest group.
    sizes = np.bincount(labels)
    order = np.lexsort((np.arange(len(sizes)), -sizes))
    labels = np.argsort(order)[labels].astype(np.int64)
    return Clustering(labels, features, _describe(labels, filled, scaled, features, config), silhouettes, notes)


def _features(profiles: pa.Table, config: ClusterConfig) -> tuple[str, ...]:
    names = profiles.column_names
    if config.features is None:
        chosen = [f for f in DEFAULT_FEATURES if f in names] + [f for f in names if f.startswith("channel_")]
    else:
        chosen = list(config.features)
    for name in chosen:
        if name not in names:
            raise ConfigError(f"clustering feature {name!r} is not a profile column (columns: {', '.join(names)})")
        data_type = profiles.schema.field(name).type
        if not (pa.types.is_integer(data_type) or pa.types.is_floating(data_type)):
            raise ConfigError(f"clustering feature {name!r} has type {data_type}; only numeric columns can be used")
    if not chosen:
        raise ConfigError("no clustering features: configure 'features' with numeric profile columns")
    if profiles.num_rows < 3:
        raise ConfigError(f"clustering needs at least 3 customers, got {profiles.num_rows}")
    return tuple(chosen)


def _impute(raw: npt.NDArray[np.float64], features: tuple[str, ...]) -> tuple[npt.NDArray[np.float64], tuple[str, ...]]:
    """Unknown values replaced by the column median; one note per column that had any."""
    missing = np.isnan(raw)
    empty = [f for f, none_known in zip(features, np.all(missing, axis=0).tolist(), strict=True) if none_known]
    if empty:
        raise ConfigError(f"clustering features with no known value: {', '.join(empty)}")
    medians = np.nanmedian(raw, axis=0)
    counts = missing.sum(axis=0)
    notes = tuple(
        f"{name}: {count} unknown value(s) replaced by the median {median:.4g}"
        for name, count, median in zip(features, counts, medians, strict=True)
        if count
    )
    return np.where(missing, medians, raw), notes


def _kmeans(scaled: npt.NDArray[np.float64], config: ClusterConfig) -> tuple[npt.NDArray[np.int64], dict[int, float]]:
    """Labels for the configured k, or for the k whose clusters of a seeded sample have the best silhouette."""
    rows = len(scaled)
    if config.k is not None and config.k > rows:
        raise ConfigError(f"k={config.k} clusters asked for {rows} customers")
    silhouettes: dict[int, float] = {}
    if config.k is None:
        rng = np.random.default_rng(config.seed)
        sample = (
            scaled[rng.choice(rows, config.selection_sample, replace=False)]
            if rows > config.selection_sample
            else scaled
        )
        for k in range(config.k_range[0], min(config.k_range[1], len(sample) - 1) + 1):
            labels = _fit(sample, k, config)
            # Identical customers can leave clusters empty; silhouette needs 2..rows-1 distinct labels.
            valid = 2 <= len(np.unique(labels)) < len(sample)
            size = min(config.silhouette_sample, len(sample))
            silhouettes[k] = (
                float(silhouette_score(sample, labels, sample_size=size, random_state=config.seed)) if valid else -1.0
            )
        if not silhouettes:
            raise ConfigError(f"k_range {config.k_range} leaves no k below the {rows} customers")
    k = config.k if config.k is not None else max(silhouettes, key=lambda key: (silhouettes[key], -key))
    return _fit(scaled, k, config), silhouettes


def _fit(rows: npt.NDArray[np.float64], k: int, config: ClusterConfig) -> npt.NDArray[np.int64]:
    model = KMeans(n_clusters=k, n_init=config.n_init, random_state=config.seed)
    return np.asarray(model.fit_predict(rows), dtype=np.int64)


def _describe(
    labels: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    scaled: npt.NDArray[np.float64],
    features: tuple[str, ...],
    config: ClusterConfig,
) -> pa.Table:
    k = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=k)
    one_hot = np.eye(k)[labels]
    means = one_hot.T @ values / counts[:, None]
    z = one_hot.T @ scaled / counts[:, None]  # standardised features have mean 0, std 1 over everyone
    population = values.mean(axis=0)
    names: list[str] = []
    descriptions: list[str] = []
    for c in range(k):
        chosen = [j for j in np.argsort(-np.abs(z[c]), kind="stable") if abs(z[c, j]) >= config.min_z]
        terms = [_term(features[j], z[c, j], means[c, j], population[j]) for j in chosen[: config.max_terms]]
        if not terms:
            names.append("Typical customers")
            descriptions.append("Close to average on every feature")
            continue
        name = _capitalise(", ".join(words for words, _ in terms[:2]))
        names.append(f"{name} ({c})" if name in names else name)
        descriptions.append(_capitalise(", ".join(phrase for _, phrase in terms)))
    columns: dict[str, object] = {
        "cluster": np.arange(k, dtype=np.int64),
        "name": names,
        "description": descriptions,
        "customers": counts.astype(np.int64),
        "share": counts / len(labels),
    }
    columns.update({f"mean_{f}": means[:, j] for j, f in enumerate(features)})
    columns.update({f"z_{f}": z[:, j] for j, f in enumerate(features)})
    return pa.table(columns)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _term(feature: str, z: float, mean: float, population: float) -> tuple[str, str]:
    """Short words for one distinguishing feature, and the phrase with its numbers.

    E.g. ``("recent", "very recent (recency 12 d vs 64 d)")``: the cluster mean against everyone's.
    """
    if feature.startswith("channel_"):
        channel = feature.removeprefix("channel_")
        words = f"prefer {channel}" if z > 0 else f"seldom use {channel}"
        return words, f"{words} ({channel} {mean:.0%} vs {population:.0%})"
    high, low, unit, label = _WORDING.get(feature, (f"high {feature}", f"low {feature}", "", feature))
    words = high if z > 0 else low
    phrase = f"very {words}" if abs(z) >= VERY_Z else words
    if unit == "x" and population > 0:
        return words, f"{phrase} ({label} {mean / population:.1f}x average)"
    if unit == "d":
        return words, f"{phrase} ({label} {mean:.0f} d vs {population:.0f} d)"
    if unit == "%":
        return words, f"{phrase} ({label} {mean:.0%} vs {population:.0%})"
    return words, f"{phrase} ({label} {mean:.3g} vs {population:.3g})"
