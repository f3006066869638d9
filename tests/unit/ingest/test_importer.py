"""Import validation: every kind of bad input gets a located error and writes nothing."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError, InputError, ValidationFailed
from shopsense.ingest.importer import Duplicates, Importer, OnError
from shopsense.services.data import DataService
from tests.conftest import event_count, load, write

HEADER = "user_id,item_id,type,timestamp\n"
GOOD = (
    HEADER + "u1,i1,view,2024-01-01T10:00:00Z\nu1,i1,purchase,2024-01-01T10:05:00Z\nu2,i2,cart,2024-01-02T09:00:00Z\n"
)


def test_valid_file_is_written_with_dense_ids_and_utc_times(service: DataService, tmp_path: Path) -> None:
    report = load(service, write(tmp_path, "e.csv", GOOD))
    assert (report.rows_read, report.rows_written, report.new_users, report.new_items) == (3, 3, 2, 2)
    events = service.store.scan_events()
    assert events.column("user_id").to_pylist() == ["u1", "u1", "u2"]
    assert str(events.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"


def test_reimporting_the_same_file_creates_no_duplicates(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", GOOD)
    load(service, path)
    again = load(service, path)
    assert (again.rows_written, again.already_stored) == (0, 3)
    assert event_count(service) == 3


def test_resent_event_id_is_stored_once(service: DataService, tmp_path: Path) -> None:
    first = write(tmp_path, "a.csv", "event_id," + HEADER + "e1,u1,i1,view,2024-01-01T10:00:00Z\n")
    second = write(
        tmp_path,
        "b.csv",
        "event_id," + HEADER + "e1,u1,i1,view,2024-01-01T10:00:00Z\ne2,u1,i2,view,2024-01-01T11:00:00Z\n",
    )
    load(service, first)
    report = load(service, second)
    assert (report.rows_written, report.already_stored) == (1, 1)
    assert event_count(service) == 2


def _fails(service: DataService, path: Path, **options: object) -> ValidationFailed:
    before = event_count(service)
    with pytest.raises(ValidationFailed) as info:
        load(service, path, **options)
    assert event_count(service) == before, "a failed import must write nothing"
    return info.value


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ("u1,i1,view,not-a-time", "timestamp", "unparseable timestamp"),
        ("u1,i1,view,1900-01-01T00:00:00Z", "timestamp", "before 1970"),
        ("u1,i1,view,2999-01-01T00:00:00Z", "timestamp", "in the future"),
        ("u1,i1,teleport,2024-01-01T00:00:00Z", "type", "unknown event type"),
        (",i1,view,2024-01-01T00:00:00Z", "user_id", "missing user_id"),
        ("u1,  ,view,2024-01-01T00:00:00Z", "item_id", "missing item_id"),
        ("u1,i1,,2024-01-01T00:00:00Z", "type", "missing event type"),
    ],
)
def test_bad_value_is_located_and_nothing_is_written(
    service: DataService, tmp_path: Path, row: str, column: str, reason: str
) -> None:
    path = write(tmp_path, "bad.csv", GOOD + row + "\n")
    error = _fails(service, path)
    assert error.rows_bad == 1
    (problem,) = error.problems
    assert (problem.row, problem.column) == (4, column)
    assert reason in problem.reason
    assert problem.file == str(path)


def test_numeric_fields_are_checked(service: DataService, tmp_path: Path) -> None:
    text = (
        HEADER.strip()
        + ",quantity,value\n"
        + "u1,i1,purchase,2024-01-01T00:00:00Z,abc,1\n"
        + (
            "u1,i1,purchase,2024-01-01T00:00:00Z,-2,1\nu1,i1,purchase,2024-01-01T00:00:00Z,1,-5\n"
            "u1,i1,purchase,2024-01-01T00:00:00Z,1,1e400\n"
        )
    )
    error = _fails(service, write(tmp_path, "n.csv", text))
    reasons = {(p.row, p.column, p.reason) for p in error.problems}
    assert (1, "quantity", "not a number") in reasons
    assert (2, "quantity", "must be greater than 0") in reasons
    assert (3, "value", "must not be negative") in reasons
    assert (4, "value", "not a finite number") in reasons


def test_item_prices_must_be_non_negative_numbers(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", "item_id,title,price\ni1,Cup,3.5\ni2,Pot,-1\ni3,Pan,cheap\n")
    with pytest.raises(ValidationFailed) as info:
        load(service, path, kind=RecordKind.ITEMS)
    found = {(p.row, p.column, p.reason, p.value) for p in info.value.problems}
    assert found == {(2, "price", "must not be negative", "-1"), (3, "price", "not a number", "cheap")}
    assert service.stats().items == 0


def test_problem_list_is_capped_but_total_is_counted(service: DataService, tmp_path: Path) -> None:
    rows = "".join(f"u{i},i1,view,bad\n" for i in range(120))
    error = _fails(service, write(tmp_path, "many.csv", HEADER + rows))
    assert len(error.problems) == service.settings.ingest.max_problems_shown
    assert error.total == 120
    assert "and 70 more problems" in str(error)


def test_skip_mode_writes_good_rows_and_rejects_bad_ones_with_reasons(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "mixed.csv", GOOD + "u9,i9,teleport,2024-01-01T00:00:00Z\nu9,i9,view,never\n")
    report = load(service, path, on_error=OnError.SKIP)
    assert (report.rows_written, report.rows_rejected) == (3, 2)
    assert event_count(service) == 3
    assert report.rejects_file is not None
    with open(report.rejects_file, encoding="utf-8") as fh:
        rejects = list(csv.DictReader(fh))
    assert [r["row"] for r in rejects] == ["4", "5"]
    assert "unknown event type" in rejects[0]["reasons"]
    assert rejects[1]["timestamp"] == "never"


def test_missing_required_column_names_the_field(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "user_id,item_id,type\nu1,i1,view\n")
    with pytest.raises(InputError, match=r"missing required column\(s\) for timestamp.*Columns found: user_id"):
        load(service, path)


def test_extra_columns_are_refused_ignored_or_kept(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", HEADER.strip() + ",coupon\nu1,i1,view,2024-01-01T00:00:00Z,SPRING\n")
    with pytest.raises(InputError, match=r"unmapped column.*coupon"):
        load(service, path)
    assert load(service, path, extra="ignore").ignored_columns == ["coupon"]
    other = write(tmp_path, "y.csv", HEADER.strip() + ",coupon\nu2,i1,view,2024-01-01T00:00:00Z,SUMMER\n")
    load(service, other, extra="keep")
    contexts = service.store.scan_events().column("context").to_pylist()
    assert '{"coupon":"SUMMER"}' in contexts


def test_mapping_constants_type_values_and_formats(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "who;what;action;when\nann;cup;1;01/02/2024 10:00\n")
    report = load(
        service,
        path,
        columns={"user_id": "who", "item_id": "what", "type": "action", "timestamp": "when"},
        constants={"channel": "store"},
        type_values={"1": "purchase"},
        timestamp_format="%d/%m/%Y %H:%M",
        timezone="Europe/Paris",
        delimiter=";",
    )
    assert report.rows_written == 1
    (event,) = service.store.scan_events().to_pylist()
    assert (event["type"], event["channel"]) == ("purchase", "store")
    assert event["timestamp"].isoformat() == "2024-02-01T09:00:00+00:00"  # 10:00 Paris = 09:00 UTC


def test_unix_seconds_and_aliases(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", HEADER + "u1,i1,add_to_cart,1700000000\n")
    load(service, path, timestamp_format="unix_s")
    (event,) = service.store.scan_events().to_pylist()
    assert event["type"] == "cart"
    assert event["timestamp"].year == 2023


def test_identical_rows_without_event_id(service: DataService, tmp_path: Path) -> None:
    text = GOOD + "u2,i2,cart,2024-01-02T09:00:00Z\n"
    path = write(tmp_path, "d.csv", text)
    kept = load(service, path)
    assert (kept.rows_written, kept.duplicates_kept) == (4, 1)
    assert load(service, path).rows_written == 0, "numbered repeats still collapse on re-import"
    error = _fails(service, write(tmp_path, "d2.csv", text), duplicates=Duplicates.ERROR)
    assert "identical to an earlier row" in error.problems[0].reason
    assert error.problems[0].row == 4


def test_conflicting_event_ids_are_an_error_identical_ones_collapse(service: DataService, tmp_path: Path) -> None:
    head = "event_id," + HEADER
    same = write(tmp_path, "s.csv", head + "e1,u1,i1,view,2024-01-01T00:00:00Z\ne1,u1,i1,view,2024-01-01T00:00:00Z\n")
    assert load(service, same).duplicates_collapsed == 1
    clash = write(tmp_path, "c.csv", head + "e7,u1,i1,view,2024-01-01T00:00:00Z\ne7,u1,i2,view,2024-01-01T00:00:00Z\n")
    error = _fails(service, clash)
    assert "repeats the event_id of an earlier row with different content (row 1)" in error.problems[0].reason


def test_wrong_delimiter_is_explained(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "semi.csv", "user_id|item_id|type|timestamp\nu1|i1|view|2024-01-01T00:00:00Z\n")
    with pytest.raises(InputError, match="delimiter"):
        load(service, path, delimiter=",")


def test_wrong_encoding_is_explained_and_latin1_works(service: DataService, tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("item_id,title\ni1,Caf\xe9 cup\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"not valid UTF-8.*latin-1"):
        load(service, path, kind=RecordKind.ITEMS)
    assert load(service, path, kind=RecordKind.ITEMS, encoding="latin-1").rows_written == 1


def test_truncated_gzip_is_refused(service: DataService, tmp_path: Path) -> None:
    body = (HEADER + "".join(f"u{i},i{i},view,2024-01-01T00:00:00Z\n" for i in range(50_000))).encode()
    packed = gzip.compress(body)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match="gzip stream is truncated"):
        load(service, path)
    assert event_count(service) == 0


def test_huge_fields(service: DataService, tmp_path: Path) -> None:
    line = tmp_path / "line.csv"
    line.write_text("item_id,title\ni1," + "x" * 3_000_000 + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="longer than"):
        load(service, line, kind=RecordKind.ITEMS)
    long_title = write(tmp_path, "long.csv", "item_id,title\ni1," + "y" * 70_000 + "\n")
    with pytest.raises(ValidationFailed, match="longer than 65536 characters"):
        load(service, long_title, kind=RecordKind.ITEMS)


@pytest.mark.parametrize(("text", "match"), [("", "empty"), (HEADER, "no data rows")])
def test_empty_inputs(service: DataService, tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load(service, write(tmp_path, "empty.csv", text))


def test_parquet_and_jsonl_sources(service: DataService, tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i2"],
            "type": ["view", "purchase"],
            "timestamp": pa.array([1_700_000_000_000, 1_700_000_100_000], pa.timestamp("ms", tz="UTC")),
            "quantity": [1, 3],
            "value": [None, 9.5],
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")
    assert load(service, tmp_path / "e.parquet").rows_written == 2
    jsonl = write(
        tmp_path, "e.jsonl", '{"user_id": "u3", "item_id": "i1", "type": "view", "timestamp": "2024-03-01T00:00:00Z"}\n'
    )
    assert load(service, jsonl).rows_written == 1
    assert service.stats().net_revenue == 9.5


def test_items_upsert_merges_fields_and_attributes(service: DataService, tmp_path: Path) -> None:
    first = write(
        tmp_path, "i1.csv", 'item_id,title,price,category,attributes\ni1,Cup,3,Home > Kitchen,"{""color"": ""red""}"\n'
    )
    load(service, first, kind=RecordKind.ITEMS)
    second = write(tmp_path, "i2.csv", 'item_id,price,attributes\ni1,4,"{""size"": ""L""}"\n')
    load(service, second, kind=RecordKind.ITEMS)
    out = tmp_path / "items.parquet"
    service.export(RecordKind.ITEMS, out)
    (item,) = pq.read_table(out).to_pylist()
    assert (item["title"], item["price"], item["category"]) == ("Cup", 4.0, ["Home", "Kitchen"])
    assert item["attributes"] == '{"color":"red","size":"L"}'


def test_typed_parquet_columns_are_accepted_as_they_are(service: DataService, tmp_path: Path) -> None:
    items = pa.table({"item_id": [10, 11], "category": [3, 4], "price": [1, 2], "available": [True, False]})
    pq.write_table(items, tmp_path / "items.parquet")
    assert load(service, tmp_path / "items.parquet", kind=RecordKind.ITEMS).rows_written == 2
    events = pa.table(
        {
            "user_id": [1, 2],
            "item_id": [10, 11],
            "type": ["view", "view"],
            "timestamp": pa.array([1_700_000_000, 1_700_000_100], pa.int64()),
        }
    )
    pq.write_table(events, tmp_path / "events.parquet")
    report = load(service, tmp_path / "events.parquet")
    assert (report.rows_written, report.new_items) == (2, 0), "integer ids match the items' string ids"


def test_channel_values_map_source_channels_like_type_values(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", HEADER.strip() + ",channel\nu1,i1,view,2024-01-01T00:00:00Z,Shop\n")
    assert load(service, path, channel_values={"shop": "STORE"}, type_values={"view": "order"}).rows_written == 1
    (event,) = service.store.scan_events().to_pylist()
    assert (event["channel"], event["type"]) == ("store", "purchase"), "targets are resolved like file values"
    with pytest.raises(ConfigError, match=r"--channel-value.*shop=shoppe: 'shoppe' is not a known channel"):
        load(service, path, channel_values={"shop": "shoppe"})
    with pytest.raises(ConfigError, match=r"--type-value.*1=teleport: 'teleport' is not a known event type"):
        load(service, path, type_values={"1": "teleport"})


def test_most_rows_failing_on_channel_point_at_the_mapping_and_the_setting(
    service: DataService, tmp_path: Path
) -> None:
    rows = "".join(f"u{i},i1,view,2024-01-01T00:00:00Z,{c}\n" for i, c in enumerate(["shop"] * 3 + ["web"]))
    error = _fails(service, write(tmp_path, "c.csv", HEADER.strip() + ",channel\n" + rows))
    (hint,) = error.hints
    assert "3 of 4 rows" in hint and "'shop' in 3 rows" in hint
    assert "--channel-value shop=<channel>" in hint and "`channels`" in hint
    assert "Hint — channel:" in str(error)
    few = HEADER.strip() + ",channel\nu1,i1,view,2024-01-01T00:00:00Z,shop\n" + rows.replace("shop", "web")
    assert _fails(service, write(tmp_path, "few.csv", few)).hints == [], "one stray value is a row problem"


@pytest.mark.parametrize(
    ("values", "options", "expected"),
    [
        (["06/12/2026 10:00", "01/02/2025 08:30"], {}, "'%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M'"),
        (["13/12/2025 10:00", "06/11/2025 10:00"], {}, "read as '%d/%m/%Y %H:%M': pass --timestamp-format"),
        (["12/31/2025 10:00:59"], {}, "read as '%m/%d/%Y %H:%M:%S'"),
        (["1704103200"], {}, "read as 'unix_s'"),
        (["2024-01-01T10:00:00Z"], {"timestamp_format": "%d/%m/%Y"}, "read as ISO 8601: leave out --timestamp-format"),
        (["yesterday"], {}, "pass --timestamp-format with the file's strptime format"),
    ],
)
def test_unparseable_timestamps_suggest_a_format_from_the_values(
    service: DataService, tmp_path: Path, values: list[str], options: dict[str, str], expected: str
) -> None:
    rows = "".join(f"u1,i{n},view,{v}\n" for n, v in enumerate(values))
    error = _fails(service, write(tmp_path, "t.csv", HEADER + rows), **options)
    (hint,) = error.hints
    assert hint.startswith(f"timestamp: values such as {values[0]!r}")
    assert expected in hint


def test_skip_mode_reports_hints_and_when_every_row_was_rejected(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", HEADER + "u1,i1,view,13/12/2025 10:00\n")
    report = load(service, path, on_error=OnError.SKIP)
    assert report.all_rejected and report.rejects_file is not None
    assert "'%d/%m/%Y %H:%M'" in report.hints[0]
    assert not load(service, write(tmp_path, "ok.csv", GOOD), on_error=OnError.SKIP).all_rejected


def test_a_format_with_an_offset_ignores_the_zone(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "z.csv", HEADER + "u1,i1,view,2024-06-01 10:00 +0000\n")
    load(service, path, timestamp_format="%Y-%m-%d %H:%M %z", timezone="Europe/London")
    (event,) = service.store.scan_events().to_pylist()
    assert event["timestamp"].isoformat() == "2024-06-01T10:00:00+00:00"


def test_json_lines_objects_keep_only_their_own_keys(service: DataService, tmp_path: Path) -> None:
    event = '{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2024-01-01T00:00:00Z", "context": '
    lines = [event + '{"page": "home"}}', event.replace("i1", "i2") + '{"ab": 2, "ref": {"q": 1}}}']
    lines.append(event.replace("i1", "i3") + "null}")
    load(service, write(tmp_path, "e.jsonl", "\n".join(lines) + "\n"))
    contexts = sorted(service.store.scan_events().column("context").to_pylist(), key=lambda c: (c is None, str(c)))
    assert contexts == ['{"ab":2,"ref":{"q":1}}', '{"page":"home"}', None]


def test_rows_without_event_id_are_keyed_by_content_even_beside_rows_with_one(
    service: DataService, tmp_path: Path
) -> None:
    load(service, write(tmp_path, "plain.csv", GOOD + "u2,i2,cart,2024-01-02T09:00:00Z\n"))
    mixed = "event_id," + HEADER + "".join("," + line + "\n" for line in GOOD.splitlines()[1:])
    mixed += ",u2,i2,cart,2024-01-02T09:00:00Z\ne9,u1,i1,view,2024-01-05T00:00:00Z\n"
    report = load(service, write(tmp_path, "mixed.csv", mixed))
    assert (report.rows_written, report.already_stored, report.duplicates_kept) == (1, 4, 1)
    clash = "event_id," + HEADER + ",u1,i1,view,2024-01-01T00:00:00Z\n,u1,i1,view,2024-01-01T00:00:00Z\n"
    clash += "e1,u1,i1,view,2024-01-01T00:00:00Z\ne1,u1,i2,view,2024-01-01T00:00:00Z\n"
    error = _fails(service, write(tmp_path, "clash.csv", clash), duplicates=Duplicates.ERROR)
    assert [(p.row, p.reason) for p in error.problems] == [
        (2, "identical to an earlier row (--duplicates error) (row 1)"),
        (4, "repeats the event_id of an earlier row with different content (row 3)"),
    ]


def test_an_unexpected_engine_error_names_the_file(
    service: DataService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")

    monkeypatch.setattr(Importer, "_key_rows", broken)
    path = write(tmp_path, "e.csv", GOOD)
    with pytest.raises(InputError, match=r"e\.csv: the import stopped on an unexpected DuckDB error: Out of Memory"):
        load(service, path)
    assert event_count(service) == 0


def test_a_folder_is_not_a_file(service: DataService, tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="is a folder, not a file"):
        load(service, tmp_path / "dir.csv")
