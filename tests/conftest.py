"""Shared fixtures: a fresh data directory, settings and data service per test."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS; implicit asks for it

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsense.domain import RecordKind
from shopsense.features.interactions import Interactions, build_interactions
from shopsense.ingest.importer import ImportReport
from shopsense.ingest.mapping import load_mapping
from shopsense.ingest.synthetic import GeneratorConfig, generate
from shopsense.services.data import DataService
from shopsense.settings import DEFAULT_EVENT_TYPES, Settings, load_settings
from tests import postgres

DATA = Path(__file__).parent / "data"
DEMO_SAMPLE = Path(__file__).resolve().parents[1] / "src" / "shopsense" / "data" / "online_retail_demo.csv.gz"
"""Whole histories of 1,000 Online Retail customers over a year (CC BY 4.0): what `make demo` loads."""
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def service(settings: Settings) -> Iterator[DataService]:
    svc = DataService(settings)
    yield svc
    svc.close()


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write a small input file for a test."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(service: DataService, path: Path, kind: RecordKind = RecordKind.EVENTS, **options: Any) -> ImportReport:
    """Import ``path`` with mapping options and importer options split the way the CLI does."""
    importer_opts = {k: options.pop(k) for k in ("on_error", "duplicates") if k in options}
    mapping = load_mapping(None, kind, options)
    return service.import_file(path, mapping, **importer_opts)


def events_table(rows: list[tuple[str, str, str, datetime]]) -> pa.Table:
    """A small events table from (user_id, item_id, type, timestamp) tuples."""
    users, items, types, times = zip(*rows, strict=True)
    return pa.table(
        {
            "user_id": list(users),
            "item_id": list(items),
            "type": list(types),
            "timestamp": pa.array(list(times), pa.timestamp("us", tz="UTC")),
        }
    )


def event_count(service: DataService) -> int:
    return service.stats().events


@pytest.fixture(scope="session")
def shop_tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, pa.Table]:
    out: Path = tmp_path_factory.mktemp("shop")
    generate(GeneratorConfig(users=400, items=120, events=20_000, days=60, seed=3), out)
    return pq.read_table(out / "events.parquet"), pq.read_table(out / "items.parquet")


@pytest.fixture(scope="session")
def shop(shop_tables: tuple[pa.Table, pa.Table]) -> Interactions:
    events, items = shop_tables
    return build_interactions(events, dict(DEFAULT_EVENT_TYPES), catalog=items)


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Tiny tensors run fastest on one thread, above all on a busy machine (torch imported only when used)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    from shopsense.services.recommendation import RecommendationService  # lightgbm, only when used

    RecommendationService(service).train("default")
    service.close()
    return root / "data"


@pytest.fixture(scope="session")
def demo_events(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """The demo sample's events (customers only, guests left out) as the store returns them."""
    import pyarrow.compute as pc

    service = DataService(load_settings(None, data_dir=tmp_path_factory.mktemp("demo") / "data"))
    try:
        service.import_dataset("online-retail", [DEMO_SAMPLE])
        events = service.store.scan_events()
    finally:
        service.close()
    return events.filter(pc.invert(pc.starts_with(events["user_id"], "guest:")))


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A throwaway PostgreSQL 15+ server for the session, started when a test first asks for it: the superuser's
    URL, ``postgresql://postgres@127.0.0.1:PORT/postgres`` (tests/postgres.py). Skipped without PostgreSQL, failed
    under CI=true."""
    server = postgres.require_server()
    yield server.admin_url
    postgres.stop_shared_server()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh empty database for one test, owned by the plain role ``shopsense``:
    ``postgresql://shopsense@127.0.0.1:PORT/t_<hex>``; dropped afterwards, open connections and all."""
    with postgres.require_server().database("t") as url:
        yield url
