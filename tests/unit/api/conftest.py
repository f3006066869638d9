"""A trained data directory shared by the API tests, and clients with keys of each scope."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from shopsense.api.app import create_app
from shopsense.domain import RecordKind
from shopsense.services.data import DataService
from shopsense.services.keys import KeyRing
from shopsense.services.recommendation import RecommendationService
from shopsense.settings import Settings, load_settings
from tests.conftest import load


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, shop_tables: tuple[pa.Table, pa.Table]) -> Path:
    """A data directory with the synthetic shop imported and the default pipeline trained once."""
    root = tmp_path_factory.mktemp("served")
    events, items = shop_tables
    pq.write_table(events, root / "events.parquet")
    pq.write_table(items, root / "items.parquet")
    service = DataService(load_settings(None, data_dir=root / "data"))
    load(service, root / "items.parquet", RecordKind.ITEMS)
    load(service, root / "events.parquet")
    RecommendationService(service).train("default")
    service.close()
    return root / "data"


@dataclass
class Api:
    """A running app over a private copy of the trained data, with one key per scope."""

    client: TestClient
    settings: Settings
    keys: dict[str, str]

    def headers(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


def make_api(data: Path, **serve: object) -> Iterator[Api]:
    settings = Settings(data_dir=data, serve={"reload_seconds": 0, **serve})  # type: ignore[arg-type]
    ring = KeyRing(data / "keys.json")
    keys = {scope: ring.create(f"test {scope}", [scope])[0] for scope in ("events:write", "recommend:read", "admin")}
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, keys)


@pytest.fixture
def api(trained: Path, tmp_path: Path) -> Iterator[Api]:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    yield from make_api(data)
