"""Headerless files, derived fields (and hostile expressions refused), and the zero-quantity policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError, InputError, ValidationFailed
from shopsense.ingest.expressions import ExpressionError, check_expression
from shopsense.ingest.mapping import load_mapping
from shopsense.services.data import DataService
from tests.conftest import event_count, load, write

NAMES = ["cust", "sku", "day", "hhmm", "dept", "commodity", "sub", "qty"]
# A grocery export without a header: day number since the chain's start, time of day as HHMM, a
# three-level department path, and a quantity that is 0 for a coupon line.
ROWS = [
    "c1\ts1\t1\t0930\tGROCERY\tDAIRY\tMILK\t2",
    "c2\ts2\t2\t1415\tGROCERY\tBAKERY\tBREAD\t1",
    "c1\ts3\t3\t2359\tGENERAL\tCOUPON\tCOUPON\t0",
]
TIMESTAMP = (
    "TIMESTAMP '2024-01-01' + to_days(CAST(day AS INTEGER) - 1) "
    "+ to_minutes(CAST(hhmm AS INTEGER) // 100 * 60 + CAST(hhmm AS INTEGER) % 100)"
)
MAPPING = f"""
header = false
source_columns = {NAMES!r}
zero_quantity = "keep"

[columns]
user_id = "cust"
item_id = 2          # by position
quantity = "qty"

[constants]
type = "purchase"

[derived]
timestamp = "{TIMESTAMP}"
context = "json_object('path', concat_ws(' > ', dept, commodity, sub))"
"""


def _tsv(tmp_path: Path, rows: list[str] = ROWS, name: str = "tx.tsv") -> Path:
    return write(tmp_path, name, "\n".join(rows) + "\n")


def test_headerless_tsv_with_derived_fields_from_one_mapping_file(service: DataService, tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, "map.toml", MAPPING), RecordKind.EVENTS, {})
    report = service.import_file(_tsv(tmp_path), mapping)
    assert (report.rows_read, report.rows_written, report.zero_quantity_kept) == (3, 3, 1)
    events = service.store.scan_events().sort_by("timestamp").to_pylist()
    assert [e["item_id"] for e in events] == ["s1", "s2", "s3"]
    assert [e["timestamp"].isoformat() for e in events] == [
        "2024-01-01T09:30:00+00:00",
        "2024-01-02T14:15:00+00:00",
        "2024-01-03T23:59:00+00:00",
    ]
    assert json.loads(events[0]["context"]) == {"path": "GROCERY > DAIRY > MILK"}
    assert [e["quantity"] for e in events] == [2.0, 1.0, 0.0]


def test_derived_category_path_for_items(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", "sku,name,dept,commodity\np1,Milk,Grocery,Dairy\np2,Bread,Grocery,\n")
    derived = {"category": "concat_ws(' > ', dept, NULLIF(commodity, ''))", "title": "upper(name)"}
    report = load(service, path, kind=RecordKind.ITEMS, columns={"item_id": "sku"}, derived=derived)
    assert report.rows_written == 2
    items = {r["item_id"]: r for r in service.store.scan_items().to_pylist()}
    assert items["p1"]["category"] == ["Grocery", "Dairy"]
    assert items["p2"]["category"] == ["Grocery"]
    assert items["p1"]["title"] == "MILK"


def test_event_type_from_a_code_table_with_case(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "u,i,code,ts\nu1,i1,1,2024-01-01T00:00:00Z\nu1,i2,3,2024-01-01T00:01:00Z\n")
    derived = {"type": "CASE code WHEN '1' THEN 'view' WHEN '2' THEN 'cart' WHEN '3' THEN 'purchase' END"}
    load(service, path, columns={"user_id": "u", "item_id": "i", "timestamp": "ts"}, derived=derived)
    types = sorted(service.store.scan_events().column("type").to_pylist())
    assert types == ["purchase", "view"]


def test_headerless_flags_name_columns_or_map_them_by_position(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "u1,i1,view,2024-01-01T00:00:00Z\nu2,i2,cart,2024-01-02T00:00:00Z\n")
    named = load(service, path, header=False, source_columns=["user_id", "item_id", "type", "timestamp"])
    assert named.rows_written == 2, "line 1 is data, not a header"
    again = load(service, path, header=False, columns={"user_id": "1", "item_id": 2, "type": 3, "timestamp": 4})
    assert (again.rows_written, again.already_stored) == (0, 2)


def test_headerless_column_count_mismatch_names_file_and_row(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "u1,i1,view,2024-01-01T00:00:00Z\n")
    with pytest.raises(InputError, match=r"h\.csv.*row 1 has 4 field\(s\) but --columns/source_columns names 3"):
        load(service, path, header=False, source_columns=["user_id", "item_id", "timestamp"])
    ragged = _tsv(tmp_path, [ROWS[0], ROWS[1] + "\textra", ROWS[2]], "ragged.tsv")
    with pytest.raises(InputError, match=r"ragged\.tsv.*row 2 has 9 field\(s\), but --columns/source_columns names 8"):
        load(service, ragged, header=False, source_columns=NAMES, extra="ignore")
    assert event_count(service) == 0


def test_positions_past_the_last_column_and_names_without_no_header_are_refused(
    service: DataService, tmp_path: Path
) -> None:
    path = write(tmp_path, "h.csv", "u1,i1,view,2024-01-01T00:00:00Z\n")
    with pytest.raises(InputError, match="timestamp -> position 9 \\(the file has 4 columns\\)"):
        load(service, path, header=False, columns={"user_id": 1, "item_id": 2, "type": 3, "timestamp": 9})
    with pytest.raises(ConfigError, match="headerless file: add --no-header"):
        load(service, path, source_columns=["a", "b", "c", "d"])
    with pytest.raises(InputError, match="CSV/TSV"):
        load(service, write(tmp_path, "e.jsonl", '{"user_id": "u"}\n'), header=False)


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("read_text('/etc/passwd')", "function 'read_text' is not allowed"),
        ("read_csv('/etc/passwd')", "function 'read_csv' is not allowed"),
        ("getenv('HOME')", "function 'getenv' is not allowed"),
        ("current_setting('temp_directory')", "function 'current_setting' is not allowed"),
        ("(SELECT max(user_id) FROM users)", "a subquery is not allowed"),
        ("u IN (SELECT 1)", "a subquery is not allowed"),
        ("u; DROP TABLE events", "';' is not allowed"),
        ("u -- ) FROM read_text('/etc/passwd')", "comments are not allowed"),
        ("u /* ) FROM read_text('/etc/passwd') */", "comments are not allowed"),
        ("u) FROM read_text('/etc/passwd') AS t(u", "no FROM"),
        ("u), (getenv('HOME')", "function 'row' is not allowed|no FROM"),
        ("count(*)", "function 'count_star' is not allowed"),
        ("row_number() OVER ()", "a window function is not allowed"),
        ("main.lower(u)", "qualified by a schema"),
        ("u.lower()", r"'u.lower\(…\)': method calls .* write lower\(column, …\)"),
        ("lpad(u, 2000000000, 'x')", "width must be a whole number written out, at most 10,000"),
        ("rpad(u, 10001, 'x')", "at most 10,000"),
        ("lpad(u, length(u) * 100000000, 'x')", "width must be a whole number written out"),
        ("lpad(u, -1, 'x')", "width must be a whole number written out"),
        ("repeat('x', 2000000000)", "function 'repeat' is not allowed"),
        ("printf('%2000000000s', u)", "function 'printf' is not allowed"),
        ("format('{:>2000000000}', u)", "function 'format' is not allowed"),
        ("list_transform([u], x -> getenv(x))", "function 'list_transform' is not allowed|a lambda is not allowed"),
        ("PRAGMA version", "not a valid expression|cannot be parsed"),
        ("", "empty"),
    ],
)
def test_hostile_expressions_are_refused_before_anything_is_read(expression: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=why):
        check_expression(expression)


def test_a_small_literal_pad_width_is_allowed() -> None:
    assert check_expression("lpad(CAST(u AS VARCHAR), 6, '0')").columns == {"u"}
    assert check_expression("rpad(u, 10000, ' ')").columns == {"u"}


def test_hostile_expression_in_a_mapping_names_the_field(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "u,i,ts\nu1,i1,2024-01-01T00:00:00Z\n")
    with pytest.raises(ConfigError, match=r"derived field session_id = \"getenv\('HOME'\)\" is refused"):
        load(service, path, derived={"session_id": "getenv('HOME')"})


def test_unknown_column_in_an_expression_is_refused_with_the_file_columns(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "u,i,ts\nu1,i1,2024-01-01T00:00:00Z\n")
    columns = {"user_id": "u", "item_id": "i", "timestamp": "ts"}
    with pytest.raises(InputError, match=r"derived field type = 'lower\(kind\)'.*unknown column\(s\) 'kind'.*u, i, ts"):
        load(service, path, columns=columns, derived={"type": "lower(kind)"})
    with pytest.raises(InputError, match="unknown column"):  # the staged row number is no column of the file
        load(service, path, columns=columns, derived={"type": "CAST(__row AS VARCHAR)"})


def test_expression_errors_name_the_field_the_expression_and_the_row(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "u,i,n\nu1,i1,1\nu2,i2,x\nu3,i3,2\n")
    base = {"columns": {"user_id": "u", "item_id": "i"}, "constants": {"type": "view"}}
    with pytest.raises(InputError, match=r"derived field timestamp = 'to_timestamp\(n \* 60\)' cannot be used"):
        load(service, path, **base, derived={"timestamp": "to_timestamp(n * 60)"})
    bad = "to_timestamp(CAST(n AS INTEGER) * 60)"
    with pytest.raises(InputError, match=r"derived field timestamp = .* fails at row 2: .*'x'"):
        load(service, path, **base, derived={"timestamp": bad})
    assert event_count(service) == 0


def test_values_a_derived_field_gives_that_fail_its_checks_name_the_expression(
    service: DataService, tmp_path: Path
) -> None:
    """A problem line shows the field and the value; the hint says which expression gave that value."""
    path = write(tmp_path, "e.csv", "u,i,n\nu1,i1,1\nu2,i2,2\n")
    base = {"columns": {"user_id": "u", "item_id": "i"}, "constants": {"type": "view"}}
    wrong = "make_timestamp(CAST(n AS INTEGER), 1, 1, 0, 0, 0)"  # year 1 and 2: before 1970
    with pytest.raises(ValidationFailed) as info:
        load(service, path, **base, derived={"timestamp": wrong})
    assert [(p.row, p.column) for p in info.value.problems] == [(1, "timestamp"), (2, "timestamp")]
    assert any(f"derived field timestamp = {wrong!r}" in hint for hint in info.value.hints), info.value.hints
    report = load(service, path, **base, derived={"timestamp": wrong}, on_error="skip")
    assert any(f"derived field timestamp = {wrong!r}" in hint for hint in report.hints)
    fine = load(service, path, columns={"user_id": "u", "item_id": "i"}, derived={"type": "if(n = '1', 'view', 'x')"},
                constants={"timestamp": "2024-01-01T00:00:00Z"}, on_error="skip")  # fmt: skip
    assert fine.rows_rejected == 1 and any("derived field type = " in hint for hint in fine.hints)


ZEROS = "user_id,item_id,type,timestamp,quantity\n" + "".join(
    f"u{n},i1,purchase,2024-01-01T00:00:0{n}Z,{q}\n" for n, q in enumerate([1, 0, 2, 0])
)


def test_zero_quantities_are_rejected_by_default_and_counted(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "z.csv", ZEROS)
    with pytest.raises(ValidationFailed) as info:
        load(service, path)
    assert [(p.row, p.column) for p in info.value.problems] == [(2, "quantity"), (4, "quantity")]
    assert "--zero-quantity keep or drop" in info.value.problems[0].reason
    report = load(service, path, on_error="skip")
    assert report.rows_rejected == 2
    assert sum(n for reason, n in report.problems_by_reason.items() if "is 0" in reason) == 2


def test_zero_quantities_kept_or_dropped_by_policy(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "z.csv", ZEROS)
    dropped = load(service, path, zero_quantity="drop")
    assert (dropped.rows_read, dropped.rows_written, dropped.zero_quantity_dropped, dropped.rows_rejected) == (
        4, 2, 2, 0,
    )  # fmt: skip
    kept = load(service, path, zero_quantity="keep")
    assert (kept.rows_written, kept.already_stored, kept.zero_quantity_kept) == (2, 2, 2)
    assert sorted(service.store.scan_events().column("quantity").to_pylist()) == [0.0, 0.0, 1.0, 2.0]


def test_negative_quantities_stay_errors_under_every_policy(service: DataService, tmp_path: Path) -> None:
    path = write(tmp_path, "n.csv", "user_id,item_id,type,timestamp,quantity\nu1,i1,purchase,2024-01-01T00:00:00Z,-1\n")
    for policy in ("keep", "drop"):
        with pytest.raises(ValidationFailed):
            load(service, path, zero_quantity=policy)


def test_zero_quantity_policy_from_settings(tmp_path: Path) -> None:
    from shopsense.settings import load_settings

    settings = load_settings(data_dir=tmp_path / "data", ingest={"zero_quantity": "drop"})
    service = DataService(settings)
    try:
        report = load(service, write(tmp_path, "z.csv", ZEROS))
        assert report.zero_quantity_dropped == 2
    finally:
        service.close()
