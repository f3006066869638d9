from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from shopsense.domain import IdIndex
from shopsense.features.interactions import build_interactions
from shopsense.ranking.candidates import CandidateConfig, CandidateGenerator, Source
from shopsense.ranking.features import PairFeatures, _affinity, sparse_values

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def test_pair_features_have_known_values() -> None:
    rows = [  # (user, item, type, days before as_of)
        ("a", "x", "view", 10),
        ("a", "x", "view", 4),
        ("a", "x", "purchase", 2),
        ("a", "y", "view", 1),
        ("b", "x", "view", 3),
        ("b", "y", "view", 3),
        ("b", "z", "purchase", 0),
    ]
    events = pa.table(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "type": [r[2] for r in rows],
            "timestamp": pa.array([T0 - timedelta(days=r[3]) for r in rows], pa.timestamp("us", "UTC")),
        }
    )
    catalog = pa.table({"item_id": ["x", "y", "z"], "category": ["Home", "Home", "Toys"], "price": [10.0, 30.0, None]})
    data = build_interactions(events, {"view": 1.0, "purchase": 5.0}, items=IdIndex(["x", "y", "z"]), catalog=catalog)
    generator = CandidateGenerator(CandidateConfig(sources=(Source(name="pop", model="popular", n=3),))).fit(data)
    candidates = generator.generate(data)
    frame = PairFeatures(("purchase",)).fit(data).build(data, candidates)
    value = {
        (int(u), int(i)): dict(zip(frame.names, row.tolist(), strict=True))
        for u, i, row in zip(frame.users, frame.items, frame.values, strict=True)
    }
    ax, ay, az, bz = value[(0, 0)], value[(0, 1)], value[(0, 2)], value[(1, 2)]
    assert (ax["user_item_views"], ax["user_item_purchases"]) == (2, 1)
    assert ax["user_item_days_since"] == pytest.approx(2.0)
    assert np.isnan(az["user_item_days_since"]), "never touched: missing, not zero"
    assert ax["user_events"] == 4 and ax["user_purchases"] == 1 and ax["user_items"] == 2
    assert ax["user_days_since_last"] == pytest.approx(1.0)
    assert ax["user_mean_price"] == pytest.approx((10 + 10 + 10 + 30) / 4)
    assert ax["user_spend"] == pytest.approx(10.0)
    assert ax["item_events"] == 4 and ax["item_purchases"] == 1 and ax["item_users"] == 2
    assert ax["item_events_7d"] == 3 and ax["item_conversion"] == pytest.approx(1.1 / 5)
    assert ax["user_category_share"] == pytest.approx(1.0) and az["user_category_share"] == 0
    assert ay["price_vs_user"] == pytest.approx(30 / 15)
    assert np.isnan(bz["price_vs_user"]), "unknown price"
    # b's last items are z, then y and x (same time); y co-occurs with x (users a and b had both).
    assert ay["cooc_recent"] > 0 and value[(1, 0)]["cooc_recent"] > 0
    assert frame.related[list(zip(frame.users, frame.items, strict=True)).index((0, 1))] == 0
    assert ax["score_pop"] > 0 and ax["rank_pop"] >= 1 and ax["n_sources"] == 1


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.floats(0.0, 0.9))
def test_sparse_values_equal_scipy_indexing(seed: int, n: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    matrix = sp.random(n, n, density=density, format="csr", random_state=seed)
    matrix.sum_duplicates()
    rows, cols = rng.integers(0, n, 200), rng.integers(0, n, 200)
    assert np.array_equal(sparse_values(matrix, rows, cols), np.asarray(matrix[rows, cols]).ravel())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 60), st.integers(1, 6), st.integers(0, 4))
def test_per_pair_counts_ages_and_shares_equal_counting_event_by_event(
    seed: int, n_events: int, n_users: int, future: int
) -> None:
    """The vectorised lookups against a plain loop over the events (some after as_of, which count as
    never touched for the age)."""
    rng = np.random.default_rng(seed)
    items, types = ["x", "y", "z", "w"], ["view", "cart", "purchase"]
    as_of = T0 - timedelta(days=future)  # events up to T0, so some may lie after as_of
    rows = sorted(
        (f"u{rng.integers(n_users)}", items[rng.integers(4)], types[rng.integers(3)], int(rng.integers(0, 30 * 86_400)))
        for _ in range(n_events)
    )
    events = pa.table(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "type": [r[2] for r in rows],
            "timestamp": pa.array([T0 - timedelta(seconds=r[3]) for r in rows], pa.timestamp("us", "UTC")),
        }
    )
    catalog = pa.table({"item_id": items, "category": ["Home", "Home", None, "Toys"], "brand": ["a", None, "b", "b"]})
    data = build_interactions(
        events, {t: 1.0 for t in types}, items=IdIndex(items), catalog=catalog, as_of=as_of.replace(tzinfo=UTC)
    )
    seq, cat = data.sequences, data.catalog
    assert seq is not None and cat is not None and cat.brand is not None
    n_rows = data.matrix.shape[0]
    users, pairs = np.repeat(np.arange(n_rows), 4), np.tile(np.arange(4), n_rows)
    features = PairFeatures(("purchase",))
    features.type_names_ = seq.type_names
    now = int(as_of.timestamp())
    got = features._user_item(seq, data.matrix.shape, users, pairs, now)
    shares = _affinity(seq, users, pairs, cat)
    owners = seq.owners()
    for at, (u, i) in enumerate(zip(users, pairs, strict=True)):
        mine = [e for e in range(len(owners)) if owners[e] == u and seq.items[e] == i]
        for name in seq.type_names:
            assert got[f"user_item_{name}s"][at] == sum(seq.types[e] == seq.type_code(name) for e in mine)
        shifted = (now - seq.times[mine[-1]]) / 86_400 + 1.0 if mine else np.nan  # stored +1, as the features do
        expected = shifted - 1.0 if mine and shifted > 0 else np.nan
        assert np.array_equal(got["user_item_days_since"][at], expected, equal_nan=True)
        own = [e for e in range(len(owners)) if owners[e] == u]
        for field, codes in (("category", cat.category), ("brand", cat.brand)):
            share = sum(codes[seq.items[e]] == codes[i] for e in own) / max(len(own), 1) if codes[i] >= 0 else np.nan
            assert np.array_equal(shares[f"user_{field}_share"][at], share, equal_nan=True)
