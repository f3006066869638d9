"""Interaction weights: event types, time decay, returns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from shopsense.domain import IdIndex
from shopsense.features.interactions import build_interactions
from tests.conftest import events_table

NOW = datetime(2024, 3, 1, tzinfo=UTC)


def _events(rows: list[tuple[str, str, str, int]]) -> pa.Table:
    return events_table([(u, i, t, NOW - timedelta(days=d)) for u, i, t, d in rows])


def test_weights_decay_and_returns() -> None:
    events = _events(
        [
            ("a", "x", "view", 0),
            ("a", "x", "purchase", 10),  # 10 days old: half weight with a 10-day half-life
            ("a", "y", "purchase", 0),
            ("a", "y", "return", 0),  # bought and returned: nothing left
            ("b", "z", "teleport", 0),  # unknown type counts 0
        ]
    )
    weights = {"view": 1.0, "purchase": 10.0, "return": -10.0}
    data = build_interactions(events, weights, half_life_days=10, as_of=NOW)
    dense = data.matrix.toarray()
    assert data.users.values == ["a", "b"] and data.items.values == ["x", "y", "z"]
    assert dense[0, 0] == pytest.approx(1 + 5)
    assert dense[0, 1] == 0 and dense[1, 2] == 0
    assert data.matrix.nnz == 1


def test_a_fixed_catalogue_keeps_its_columns() -> None:
    catalogue = IdIndex(["y", "x", "w"])
    data = build_interactions(
        _events([("a", "x", "view", 0), ("a", "gone", "view", 0)]), {"view": 1.0}, items=catalogue
    )
    assert data.matrix.shape == (1, 3)
    assert data.matrix.toarray().tolist() == [[0.0, 1.0, 0.0]]


def test_catalogue_text_and_category_paths_align_with_items() -> None:
    catalog = pa.table(
        {
            "item_id": ["y", "x", "q"],
            "title": ["Yellow mug", None, "Queen bed"],
            "category": pa.array([["Home", "Kitchen"], None, ["Home", "Bedroom"]], pa.list_(pa.string())),
            "brand": [None, "Acme", None],
        }
    )
    data = build_interactions(_events([("a", "x", "view", 0), ("a", "y", "view", 0)]), {"view": 1.0}, catalog=catalog)
    assert data.items.values == ["x", "y"] and data.catalog is not None
    assert data.catalog.text == ("Acme", "Yellow mug Home > Kitchen")
    assert data.catalog.categories == ("Home > Kitchen",)  # only categories of items in the vocabulary
    assert data.catalog.category.tolist() == [-1, 0]


def test_sub_second_timestamps_order_the_sequence() -> None:
    # Click streams log several events a second: z (0.2 s) comes before x (0.7 s) although x sorts first.
    events = events_table(
        [
            ("a", "x", "view", NOW + timedelta(milliseconds=700)),
            ("a", "z", "view", NOW + timedelta(milliseconds=200)),
            ("a", "y", "view", NOW + timedelta(seconds=1, microseconds=1)),
        ]
    )
    data = build_interactions(events, {"view": 1.0})
    seq = data.sequences
    assert seq is not None
    assert data.items.ids(seq.items.tolist()) == ["z", "x", "y"]
    assert (seq.times - seq.times[0]).tolist() == [0, 0, 1]


def test_item_kinds_come_from_the_kind_attribute() -> None:
    catalog = pa.table(
        {
            "item_id": ["post", "x", "card"],
            "attributes": ['{"kind": "service"}', '{"colour": "red"}', '{"kind": "voucher", "group": "g1"}'],
        }
    )
    events = _events([("a", "x", "view", 0), ("a", "post", "view", 0), ("a", "card", "view", 0)])
    data = build_interactions(events, {"view": 1.0}, catalog=catalog)
    assert data.catalog is not None and data.catalog.kind is not None
    assert data.items.values == ["card", "post", "x"]
    assert data.catalog.kinds == ("service", "voucher")
    assert data.catalog.kind.tolist() == [1, 0, -1]
