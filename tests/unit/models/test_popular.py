"""Popular and trending: trending follows recent, decayed interest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from shopsense.features.interactions import build_interactions
from shopsense.models.base import RecQuery
from shopsense.models.popular import Popular, PopularConfig
from tests.conftest import events_table

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def test_trending_prefers_recent_interest_over_all_time_counts() -> None:
    rows = [(f"old{u}", "classic", "purchase", NOW - timedelta(days=200)) for u in range(10)]
    rows += [(f"new{u}", "fad", "purchase", NOW - timedelta(days=2)) for u in range(3)]
    data = build_interactions(events_table(rows), {"purchase": 1.0})
    query = RecQuery(data.rows(np.array([0])), 1)
    first = lambda model: data.items.ids([int(model.fit(data).recommend(query).items[0, 0])])[0]  # noqa: E731
    assert first(Popular()) == "classic"
    assert first(Popular(PopularConfig(half_life_days=7))) == "fad"
    assert first(Popular(PopularConfig(window_days=30))) == "fad"
