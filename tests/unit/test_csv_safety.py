"""CSV injection: every CSV shopsense writes puts a ``'`` before a text cell a spreadsheet would run as a
formula (OWASP: ``=``, ``+``, ``-``, ``@``, tab, carriage return); numbers, Parquet and JSON Lines are left
alone, and ``shopsense import`` takes the quote off again so a CSV export imports back exactly."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsense.csv_safety import neutralise, neutralise_table, restore_sql
from shopsense.domain import RecordKind
from shopsense.exports import copy_to_file
from shopsense.ingest.importer import OnError
from shopsense.marketing.audiences import export_audience
from shopsense.marketing.content import export_payload, personalise
from shopsense.services.data import DataService
from shopsense.services.marketing import MarketingService, SegmentReport
from shopsense.settings import load_settings
from tests.conftest import load, write

HOSTILE = ['=HYPERLINK("http://x")', "=cmd|' /C calc'!A0", "+SUM(1+1)", "@SUM(A1)", "-2+3", "\tx", "\rx"]
PLAIN = ["u1", "plain id", "a,b", "O'Brien", "x=1", ""]
QUOTED = ["'=x", "''+y", "'plain"]
"""Text that already starts with quotes: a formula start behind them gets one more, so reading back is exact."""


def _cells(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_neutralised(cells: list[str], values: list[str]) -> None:
    for cell, value in zip(cells, values, strict=True):
        if value in HOSTILE:
            assert cell == "'" + value, (cell, value)
        else:
            assert cell == value, (cell, value)


# -- the rule -------------------------------------------------------------------------------------


def test_formula_starts_get_a_quote_and_other_text_and_nulls_do_not() -> None:
    got = neutralise(pa.array([*HOSTILE, *PLAIN, *QUOTED, None]))
    assert got.to_pylist() == [
        *("'" + v for v in HOSTILE),
        *PLAIN,
        "''=x",
        "'''+y",
        "'plain",
        None,
    ]
    assert neutralise(pa.array(["=a", "b"], pa.large_string())).to_pylist() == ["'=a", "b"]
    assert neutralise(pa.array(["=a", "b", "=a"]).dictionary_encode()).to_pylist() == ["'=a", "b", "'=a"]
    assert neutralise(pa.chunked_array([["-1"], ["1"]])).to_pylist() == ["'-1", "1"]
    assert neutralise(pa.array(["@a", "b"], pa.string_view())).to_pylist() == ["'@a", "b"]
    assert neutralise(pa.array([-1.5, 2.0])).to_pylist() == [-1.5, 2.0]


def test_only_text_columns_change() -> None:
    table = pa.table({"id": ["-2+3", "u1"], "delta": [-2.5, 3.0], "n": pa.array([-1, 2], pa.int64())})
    got = neutralise_table(table)
    assert got.schema == table.schema
    assert got.to_pydict() == {"id": ["'-2+3", "u1"], "delta": [-2.5, 3.0], "n": [-1, 2]}


def test_reading_back_undoes_exactly_what_writing_did() -> None:
    values = [*HOSTILE, *PLAIN, *QUOTED, "'", "''", "'-", None]
    written = neutralise(pa.array(values, pa.string()))
    con = duckdb.connect()
    con.register("cells", pa.table({"v": written}))
    back = con.execute(f"SELECT {restore_sql('v')} FROM cells").fetchall()
    assert [v for (v,) in back] == values


# -- every CSV writer -----------------------------------------------------------------------------


def test_copy_to_file_neutralises_csv_text_but_not_numbers_parquet_or_json(tmp_path: Path) -> None:
    ids = [*HOSTILE, *PLAIN]
    con = duckdb.connect()
    con.register("rows", pa.table({"id": ids, "delta": [-2.0 - i for i in range(len(ids))]}))
    for name in ("out.csv", "out.csv.gz"):
        copy_to_file(con, "SELECT * FROM rows", tmp_path / name)
    rows = _cells(tmp_path / "out.csv")
    _assert_neutralised([r["id"] for r in rows], ids)
    assert [r["delta"] for r in rows][:2] == ["-2.0", "-3.0"]  # a negative number is a number, left alone
    copy_to_file(con, "SELECT * FROM rows", tmp_path / "out.parquet")
    copy_to_file(con, "SELECT * FROM rows", tmp_path / "out.jsonl")
    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == ids
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
    assert con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name LIKE 'shopsense%'").fetchone() == (
        0,
    )  # the vectorised function lives only as long as the copy


def test_recommendations_out_csv_is_neutralised(tmp_path: Path) -> None:
    from shopsense.services.answers import RECOMMENDATIONS_SCHEMA, export_recommendations

    table = pa.table(
        {
            "user_id": ['=HYPERLINK("http://x")', "u1"],
            "rank": pa.array([1, 1], pa.int32()),
            "item_id": ["i1", "@SUM(A1)"],
            "title": ["-2+3", "Cup"],
            "score": [-0.5, 0.25],
            "p_attention": [None, 0.5],
            "p_purchase": [0.1, None],
            "reason": ["Because", "+1 for you"],
        },
        schema=RECOMMENDATIONS_SCHEMA,
    )
    rows = _cells(export_recommendations(table, tmp_path / "recs.csv"))
    assert [r["user_id"] for r in rows] == ['\'=HYPERLINK("http://x")', "u1"]
    assert [(r["item_id"], r["title"], r["reason"]) for r in rows] == [
        ("i1", "'-2+3", "Because"),
        ("'@SUM(A1)", "Cup", "'+1 for you"),
    ]
    assert [r["score"] for r in rows] == ["-0.5", "0.25"]


def test_segment_members_csv_is_neutralised(tmp_path: Path) -> None:
    users = np.array([*HOSTILE, *PLAIN], dtype=object)
    report = SegmentReport(
        stats=pa.table({}), overlaps=pa.table({}), masks={"=vip": np.ones(len(users), bool)}, user_ids=users
    )
    rows = _cells(MarketingService.export_members(report, tmp_path / "members.csv"))
    _assert_neutralised([r["user_id"] for r in rows], list(users))
    assert {r["segment"] for r in rows} == {"'=vip"}
    MarketingService.export_members(report, tmp_path / "members.parquet")
    assert pq.read_table(tmp_path / "members.parquet").column("user_id").to_pylist() == list(users)


def test_audience_csv_is_neutralised_and_its_numbers_are_not(tmp_path: Path) -> None:
    ids = [*HOSTILE, *PLAIN]
    table = pa.table({"user_id": ids, "score": [-0.25] * len(ids), "rank": list(range(1, len(ids) + 1))})
    rows = _cells(export_audience(table, tmp_path / "audience.csv"))
    _assert_neutralised([r["user_id"] for r in rows], ids)
    assert {r["score"] for r in rows} == {"-0.25"}
    export_audience(table, tmp_path / "audience.parquet")
    assert pq.read_table(tmp_path / "audience.parquet").equals(table)


def test_campaign_payload_csv_is_neutralised_and_jsonl_is_not(tmp_path: Path) -> None:
    def recommend(user: str) -> list[Any]:  # stand-ins with the attributes content reads
        item = SimpleNamespace(item_id="-1", title="@home", score=1.0, explanation=SimpleNamespace(reason="r"))
        return [item]

    payload = personalise(['=HYPERLINK("http://x")', "ann"], recommend, "$first_title for $user_id")
    rows = _cells(export_payload(payload, tmp_path / "payload.csv"))
    assert [r["user_id"] for r in rows] == ['\'=HYPERLINK("http://x")', "ann"]
    assert [r["message"] for r in rows] == ['\'@home for =HYPERLINK("http://x")', "'@home for ann"]
    assert json.loads(rows[0]["items"])[0]["item_id"] == "-1"  # the JSON text starts with "[", not a formula
    lines = export_payload(payload, tmp_path / "payload.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["user_id"] == '=HYPERLINK("http://x")'


def test_import_rejects_file_is_neutralised(tmp_path: Path) -> None:
    service = DataService(load_settings(data_dir=tmp_path / "data"))
    try:
        text = (
            "user_id,item_id,type,timestamp\n"
            "u1,i1,view,2024-01-01T00:00:00Z\n"
            '"=HYPERLINK(""http://x"")",@SUM(A1),view,never\n'
            "plain,i2,teleport,2024-01-01T00:00:00Z\n"
        )
        report = load(service, write(tmp_path, "events.csv", text), on_error=OnError.SKIP)
        assert report.rows_rejected == 2 and report.rejects_file is not None
        rows = _cells(Path(report.rejects_file))
    finally:
        service.close()
    assert [(r["user_id"], r["item_id"], r["timestamp"]) for r in rows] == [
        ('\'=HYPERLINK("http://x")', "'@SUM(A1)", "never"),
        ("plain", "i2", "2024-01-01T00:00:00Z"),
    ]
    assert [r["row"] for r in rows] == ["2", "3"]


# -- a CSV export still imports back exactly ------------------------------------------------------


@pytest.fixture
def hostile_store(tmp_path: Path) -> Iterator[DataService]:
    service = DataService(load_settings(data_dir=tmp_path / "a"))
    items = 'item_id,title,price\n"=HYPERLINK(""http://x"")",-2+3,3.5\n\'=already quoted,"\tTabbed",1\ni1,Cup,2\n'
    events = (
        "user_id,item_id,type,timestamp,value\n"
        '"=cmd|\' /C calc\'!A0","=HYPERLINK(""http://x"")",purchase,2024-01-01T00:00:00Z,7.5\n'
        "+SUM(1+1),i1,view,2024-01-02T00:00:00Z,\n"
        "u1,'=already quoted,view,2024-01-03T00:00:00Z,\n"
    )
    load(service, write(tmp_path, "items.csv", items), RecordKind.ITEMS)  # stores "=already quoted"
    kept = json.dumps({"item_id": "'=kept", "title": "''-kept too"}) + "\n"  # JSON Lines are read as they are
    load(service, write(tmp_path, "more.jsonl", kept), RecordKind.ITEMS)
    load(service, write(tmp_path, "events.csv", events))
    yield service
    service.close()


@pytest.mark.parametrize("kind", [RecordKind.EVENTS, RecordKind.ITEMS, RecordKind.USERS])
def test_a_neutralised_csv_export_imports_back_exactly(
    hostile_store: DataService, tmp_path: Path, kind: RecordKind
) -> None:
    exported = tmp_path / f"{kind.value}.csv"
    n = hostile_store.export(kind, exported)
    with exported.open(encoding="utf-8", newline="") as handle:
        cells = {cell for row in csv.reader(handle) for cell in row}
    link = "'" + HOSTILE[0]
    expected = {
        RecordKind.EVENTS: ["'=cmd|' /C calc'!A0", link, "'+SUM(1+1)", "'=already quoted"],
        RecordKind.ITEMS: [link, "'-2+3", "'=already quoted", "'\tTabbed", "''=kept", "'''-kept too"],
        RecordKind.USERS: ["'=cmd|' /C calc'!A0", "'+SUM(1+1)"],
    }[kind]
    assert set(expected) <= cells, cells
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]  # no cell starts a formula
    fresh = DataService(load_settings(data_dir=tmp_path / "b"))
    try:
        report = load(fresh, exported, kind)
        assert (report.rows_written, report.rows_rejected) == (n, 0)
        fresh.export(kind, tmp_path / "b.parquet")
    finally:
        fresh.close()
    hostile_store.export(kind, tmp_path / "a.parquet")
    key = [("timestamp" if kind is RecordKind.EVENTS else f"{kind.value[:-1]}_id", "ascending")]
    assert pq.read_table(tmp_path / "b.parquet").sort_by(key) == pq.read_table(tmp_path / "a.parquet").sort_by(key)
