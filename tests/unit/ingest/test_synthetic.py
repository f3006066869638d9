"""The synthetic generator: exact size, seeded, and shaped like retail behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from shopsense.domain import RecordKind
from shopsense.ingest.source import Format
from shopsense.ingest.synthetic import GeneratorConfig, generate
from shopsense.services.data import DataService
from shopsense.settings import load_settings
from tests.conftest import load


def _events(tmp_path: Path, seed: int = 3) -> dict[str, np.ndarray]:
    cfg = GeneratorConfig(users=600, items=400, events=30_000, seed=seed)
    written = generate(cfg, tmp_path / str(seed), Format.PARQUET)
    assert written == {"items": 400, "users": 600, "events": 30_000}
    table = pq.read_table(tmp_path / str(seed) / "events.parquet")
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def test_seeded_and_exact(tmp_path: Path) -> None:
    a, b = _events(tmp_path, 3), _events(tmp_path / "again", 3)
    assert len(a["event_id"]) == 30_000
    assert (a["item_id"] == b["item_id"]).all()
    assert len(set(a["event_id"])) == 30_000


def test_funnel_popularity_repeats_and_store_purchases(tmp_path: Path) -> None:
    ev = _events(tmp_path)
    kinds = {k: int((ev["type"] == k).sum()) for k in ("view", "cart", "purchase", "return")}
    assert kinds["view"] > kinds["cart"] > kinds["purchase"] > kinds["return"] > 0
    views = ev["item_id"][ev["type"] == "view"]
    _, counts = np.unique(views, return_counts=True)
    top = np.sort(counts)[::-1]
    assert top[: len(top) // 10].sum() > 0.3 * top.sum(), "popularity should be heavy-tailed"
    buys = ev["type"] == "purchase"
    pairs = np.char.add(ev["user_id"][buys].astype(str), ev["item_id"][buys].astype(str))
    assert len(pairs) - len(np.unique(pairs)) > 100, "staples should be bought again"
    store = ev["channel"] == "store"
    assert set(ev["type"][store]) <= {"purchase", "return"}
    assert store.sum() > 0


@pytest.mark.parametrize("fmt", list(Format))
def test_generated_files_import_with_no_options(tmp_path: Path, fmt: Format) -> None:
    written = generate(GeneratorConfig(users=50, items=40, events=600, seed=1), tmp_path / "g", fmt)
    service = DataService(load_settings(data_dir=tmp_path / "data"))
    try:
        reports = {kind: load(service, tmp_path / "g" / f"{kind.value}.{fmt.value}", kind) for kind in RecordKind}
        assert {k.value: r.rows_written for k, r in reports.items()} == written
        assert all(r.rows_rejected == 0 and not r.ignored_columns for r in reports.values())
        service.export(RecordKind.USERS, tmp_path / "users.parquet")
        first = json.loads(pq.read_table(tmp_path / "users.parquet").column("attributes")[0].as_py())
        assert set(first) == {"country", "preferred_channel"}
    finally:
        service.close()
