"""A small seeded synthetic shop (views, carts, purchases, prices, categories) shared by the ranking tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsense.features.interactions import Interactions, build_interactions
from shopsense.ingest.synthetic import GeneratorConfig, generate
from shopsense.settings import DEFAULT_EVENT_TYPES


@pytest.fixture(scope="session")
def shop_tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, pa.Table]:
    out: Path = tmp_path_factory.mktemp("shop")
    generate(GeneratorConfig(users=400, items=120, events=20_000, days=60, seed=3), out)
    return pq.read_table(out / "events.parquet"), pq.read_table(out / "items.parquet")


@pytest.fixture(scope="session")
def shop(shop_tables: tuple[pa.Table, pa.Table]) -> Interactions:
    events, items = shop_tables
    return build_interactions(events, dict(DEFAULT_EVENT_TYPES), catalog=items)
