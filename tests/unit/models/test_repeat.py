"""Repeat-buy: frequency and recency of the user's own purchases, popularity after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from shopsense.features.interactions import build_interactions
from shopsense.models.base import RecQuery
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
    items = model.recommend(RecQuery(data.rows(np.array([0])), 4)).items
    names = data.items.ids([int(i) for i in items[0]])
    assert names[:2] == ["milk", "tent"]
    assert names[2] == "bread", "never-bought items follow by popularity"


def test_without_fill_only_own_purchases() -> None:
    data = _data([("a", "milk", "purchase", 1), ("b", "bread", "purchase", 1)])
    ranked = RepeatBuy(RepeatBuyConfig(fill_popular=False)).fit(data).recommend(RecQuery(data.rows(np.array([0])), 2))
    items, scores = ranked.items, ranked.scores
    assert data.items.ids([int(items[0, 0])]) == ["milk"] and items[0, 1] == -1 and np.isneginf(scores[0, 1])


def test_neighbours_bring_what_look_alikes_rebuy_before_popular_items() -> None:
    rows = [("a", "milk", "purchase", 3), ("a", "bread", "purchase", 2)]
    rows += [(u, i, "purchase", 1) for u in ("b", "c") for i in ("milk", "bread", "eggs")]
    rows += [(u, "tent", "purchase", 1) for u in ("d", "e", "f", "g")]  # the most popular item, bought by others
    data = _data(rows)
    alone = RepeatBuy().fit(data).recommend(RecQuery(data.rows(np.array([0])), 3)).items
    blended = RepeatBuy(RepeatBuyConfig(neighbours=2)).fit(data).recommend(RecQuery(data.rows(np.array([0])), 3)).items
    assert data.items.ids([int(i) for i in alone[0]])[2] == "tent", "own purchases only: popularity fills"
    names = data.items.ids([int(i) for i in blended[0]])
    assert set(names[:2]) == {"milk", "bread"}, "the shopper's own repeat items stay first"
    assert names[2] == "eggs", "what the two look-alikes re-buy comes before the popular tent"


def test_a_shopper_is_not_their_own_neighbour() -> None:
    data = _data([("a", "tea", "purchase", 1), ("b", "milk", "purchase", 1), ("c", "milk", "purchase", 1)])
    model = RepeatBuy(RepeatBuyConfig(neighbours=1, own_share=0.9)).fit(data)
    ranked = model.recommend(RecQuery(data.rows(np.array([0])), 1))
    items, scores = ranked.items, ranked.scores
    assert data.items.ids([int(items[0, 0])]) == ["tea"]
    # own unit vector x 0.9, and no neighbour shares tea: with its own row as neighbour it would be 1.0
    assert abs(scores[0, 0] - 0.9) < 1e-4


def test_a_model_saved_before_a_setting_existed_loads_with_its_default(tmp_path: Path) -> None:
    data = _data([("a", "milk", "purchase", 1), ("b", "bread", "purchase", 1)])
    model = RepeatBuy().fit(data)
    for name in ("neighbours", "own_share"):  # as a bundle pickled before these settings were added
        model.config.__dict__.pop(name)
    model.save(tmp_path / "old.model")
    loaded = RepeatBuy.load(tmp_path / "old.model")
    assert loaded.config.neighbours == 0 and loaded.config.own_share == 0.9
    items = loaded.recommend(RecQuery(data.rows(np.array([0])), 1)).items
    assert data.items.ids([int(items[0, 0])]) == ["milk"]
