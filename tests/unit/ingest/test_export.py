"""Exports: the file name picks the format, and every export imports back as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError
from shopsense.ingest.source import Format, export_format
from shopsense.services.data import DataService
from shopsense.settings import load_settings
from tests.conftest import load, write

ITEMS = (
    "item_id,title,category,brand,price,currency,available,stock,attributes,first_seen\n"
    'i1,"Cup, blue",Home > Kitchen,Acme,3.5,eur,true,4,"{""color"": ""blue"", ""size"": {""cm"": 9}}",'
    "2024-01-01T00:00:00Z\n"
    "i2,Plate,Home,,0,EUR,false,,,\n"
    'i3,"Say ""hi""",,,,,,,"{""tags"": [""a"", ""b""]}",\n'
)
USERS = 'user_id,attributes,first_seen\nu1,"{""country"": ""DE""}",2024-01-01T00:00:00Z\nu2,,\nu3,"{""tier"": 2}",\n'
EVENTS = (
    "event_id,user_id,item_id,type,timestamp,channel,session_id,quantity,value,rating,context\n"
    'e1,u1,i1,purchase,2024-01-02T10:00:00Z,store,s1,2,7,,"{""coupon"": ""X""}"\n'
    ",u1,i2,view,2024-01-02T10:01:00+01:00,web,,,,,\n"
    ",u1,i2,view,2024-01-02T10:01:00+01:00,web,,,,,\n"  # an identical repeat without id: a second event
    ',u2,i1,rating,2024-01-03T00:00:00Z,app,,,,4.5,"{""page"": {""n"": 1}}"\n'
)
SUFFIXES = [".parquet", ".csv", ".jsonl", ".ndjson", ".csv.gz", ".jsonl.gz"]
SORT = {
    RecordKind.EVENTS: ["timestamp", "user_id", "item_id"],
    RecordKind.ITEMS: ["item_id"],
    RecordKind.USERS: ["user_id"],
}


def _service(root: Path) -> DataService:
    return DataService(load_settings(data_dir=root))


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[DataService]:
    service = _service(tmp_path / "a")
    load(service, write(tmp_path, "items.csv", ITEMS), RecordKind.ITEMS)
    load(service, write(tmp_path, "users.csv", USERS), RecordKind.USERS)
    load(service, write(tmp_path, "events.csv", EVENTS))
    yield service
    service.close()


def _rows(service: DataService, kind: RecordKind, path: Path) -> list[dict[str, object]]:
    """The stored table, in a fixed order, JSON compared as values (the store keeps a file's spacing)."""
    service.export(kind, path)
    rows = pq.read_table(path).sort_by([(c, "ascending") for c in SORT[kind]]).to_pylist()
    for row in rows:
        for column in ("attributes", "context"):
            if row.get(column) is not None:
                row[column] = json.loads(str(row[column]))
    return rows


@pytest.mark.parametrize("kind", list(RecordKind))
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_export_imports_back_unchanged(filled: DataService, tmp_path: Path, kind: RecordKind, suffix: str) -> None:
    exported = tmp_path / f"{kind.value}{suffix}"
    n = filled.export(kind, exported)
    assert n == {RecordKind.EVENTS: 4, RecordKind.ITEMS: 3, RecordKind.USERS: 3}[kind]
    fresh = _service(tmp_path / "b")
    try:
        report = load(fresh, exported, kind)
        assert (report.rows_read, report.rows_written, report.rows_rejected) == (n, n, 0)
        assert _rows(fresh, kind, tmp_path / "b.parquet") == _rows(filled, kind, tmp_path / "a.parquet")
    finally:
        fresh.close()
    before = _rows(filled, kind, tmp_path / "before.parquet")
    again = load(filled, exported, kind)
    assert (again.new_users, again.new_items) == (0, 0)
    if kind is RecordKind.EVENTS:
        assert (again.rows_written, again.already_stored) == (0, n), "re-importing an export adds no event"
    assert _rows(filled, kind, tmp_path / "after.parquet") == before


def test_the_name_picks_the_format_and_an_unknown_one_is_refused(filled: DataService, tmp_path: Path) -> None:
    assert export_format(Path("u.CSV")) == (Format.CSV, False)
    assert export_format(Path("dir.v2/u.jsonl.gz")) == (Format.JSONL, True)
    assert export_format(Path("u.ndjson")) == (Format.JSONL, False)
    filled.export(RecordKind.USERS, tmp_path / "users.csv")
    assert (tmp_path / "users.csv").read_text().startswith("user_id,attributes,first_seen\n")
    for name in ("users.txt", "users", "users.parquet.gz", "users.gz"):
        with pytest.raises(ConfigError, match=r"export format.*\.parquet, \.csv, \.jsonl"):
            filled.export(RecordKind.USERS, tmp_path / name)
        assert not (tmp_path / name).exists()
