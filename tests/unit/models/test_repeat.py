"""Repeat-buy: frequency and recency of the user's own purchases, popularity after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from shopsense.features.interactions import build_interactions
from shopsense.models.repeat import RepeatBuy, RepeatBuyConfig
from tests.conftest import events_table

NOW = datetime(2024, 6, 1, tzinfo=UTC)
WEIGHTS = {"view": 1.0, "purchase": 4.0, "return": -4.0}


def _data(rows: list[tuple[str, str, str, int]]):  # type: ignore[no-untyped-def]
    return build_interactions(events_table([(u, i, t, NOW - timedelta(days=d)) for u, i, t, d in rows]), WEIGHTS)


def test_often_and_recently_bought_first_then_popular() -> None:
    data = _data(
        [
            ("a", "milk", "purchase", 1),
            ("a", "milk", "purchase", 8),
            ("a", "milk", "purchase", 15),
            ("a", "tent", "purchase", 300),  # bought once, long ago
            ("a", "bread", "view", 0),  # viewed, not bought
            ("a", "vase", "purchase", 2),
            ("a", "vase", "return", 1),  # returned: not a staple
            ("b", "bread", "purchase", 3),
            ("c", "bread", "purchase", 3),
        ]
    )
    model = RepeatBuy().fit(data)
    items, _ = model.recommend(data.rows(np.array([0])), 4)
    names = data.items.ids([int(i) for i in items[0]])
    assert names[:2] == ["milk", "tent"]
    assert names[2] == "bread", "never-bought items follow by popularity"


def test_without_fill_only_own_purchases() -> None:
    data = _data([("a", "milk", "purchase", 1), ("b", "bread", "purchase", 1)])
    items, scores = RepeatBuy(RepeatBuyConfig(fill_popular=False)).fit(data).recommend(data.rows(np.array([0])), 2)
    assert data.items.ids([int(items[0, 0])]) == ["milk"] and items[0, 1] == -1 and np.isneginf(scores[0, 1])
