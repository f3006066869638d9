"""Hostile input in files: JSON nested too deep and ids with invisible characters, checked in the SQL pass."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from shopsense.domain import BAD_ID, MAX_JSON_DEPTH, TOO_DEEP, RecordKind
from shopsense.errors import InputError, ValidationFailed
from shopsense.ingest.importer import OnError
from shopsense.ingest.validate import LINE_DEPTH, LINE_TOO_DEEP
from shopsense.services.data import DataService
from shopsense.services.event_check import EventChecker
from tests.conftest import event_count, load


def _nested(depth: int) -> str:
    """A JSON object ``depth`` deep, with brackets inside a string that must not count."""
    return '{"a":' * (depth - 1) + '{"s": "[[{{\\"]]"}' + "}" * (depth - 1)


def _csv(tmp_path: Path, name: str, header: list[str], rows: list[list[str]]) -> Path:
    path = tmp_path / name
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_the_depth_limit_is_shared_with_the_api() -> None:
    assert MAX_JSON_DEPTH == 128
    assert json.loads(_nested(3)) == {"a": {"a": {"s": '[[{{"]]'}}}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 10_000])
def test_context_nested_too_deep_is_a_row_problem(service: DataService, tmp_path: Path, depth: int) -> None:
    header = ["event_id", "user_id", "item_id", "type", "timestamp", "context"]
    rows = [
        ["e1", "u1", "i1", "view", "2024-01-01T10:00:00Z", _nested(MAX_JSON_DEPTH)],
        ["e2", "u1", "i2", "view", "2024-01-01T10:00:00Z", _nested(depth)],
        ["e3", "u2", "i1", "view", "2024-01-01T10:00:00Z", '{"list": [' + ",".join(["{}"] * 300) + "]}"],
    ]
    path = _csv(tmp_path, "deep.csv", header, rows)
    with pytest.raises(ValidationFailed) as info:
        load(service, path)
    (problem,) = info.value.problems
    assert (problem.row, problem.column, problem.reason) == (2, "context", TOO_DEEP)
    report = load(service, path, on_error=OnError.SKIP)
    assert (report.rows_written, report.rows_rejected) == (2, 1)


def test_user_attributes_nested_too_deep_are_refused(service: DataService, tmp_path: Path) -> None:
    path = _csv(tmp_path, "users.csv", ["user_id", "attributes"], [["u1", '{"tier": "gold"}'], ["u2", _nested(500)]])
    with pytest.raises(ValidationFailed) as info:
        load(service, path, kind=RecordKind.USERS)
    assert [(p.row, p.column, p.reason) for p in info.value.problems] == [(2, "attributes", TOO_DEEP)]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("user_id", "u\x00x"),
        ("user_id", "u\x1bx"),
        ("item_id", "i\x7f"),
        ("item_id", "evil\u202etxt"),
        ("user_id", "u\u2066x\u2069"),
        ("user_id", "u\u200bx"),
        ("event_id", "e\u2060"),
        ("item_id", "\ufeffi1"),
        ("session_id", "s\u200dx"),
    ],
)
def test_ids_with_invisible_characters_are_row_problems(
    service: DataService, tmp_path: Path, column: str, value: str
) -> None:
    header = ["event_id", "user_id", "item_id", "type", "timestamp", "session_id"]
    good = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2024-01-01T10:00:00Z"}
    bad = {**good, "event_id": "e2", column: value}
    path = _csv(tmp_path, "ids.csv", header, [[row.get(h, "s1") for h in header] for row in (good, bad)])
    with pytest.raises(ValidationFailed) as info:
        load(service, path)
    (problem,) = info.value.problems
    assert (problem.row, problem.column, problem.reason) == (2, column, BAD_ID)
    assert f"[{column}]" in str(info.value) and BAD_ID in str(info.value)
    assert event_count(service) == 0


def test_ids_are_stored_in_nfc_so_composed_and_decomposed_are_one(service: DataService, tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    header = ["event_id", "user_id", "item_id", "type", "timestamp"]
    rows = [
        ["e1", composed, "i1", "view", "2024-01-01T10:00:00Z"],
        ["e2", decomposed, "i1", "view", "2024-01-01T11:00:00Z"],
        [f"x-{decomposed}", "u2", "i1", "view", "2024-01-01T11:00:00Z"],
    ]
    report = load(service, _csv(tmp_path, "nfc.csv", header, rows))
    assert (report.rows_written, report.new_users) == (3, 2)
    events = service.store.scan_events()
    assert set(events.column("user_id").to_pylist()) == {composed, "u2"}
    assert f"x-{composed}" in events.column("event_id").to_pylist()
    again = load(
        service, _csv(tmp_path, "nfc2.csv", header, [[f"x-{composed}", "u2", "i1", "view", "2024-01-01T11:00:00Z"]])
    )
    assert (again.rows_written, again.already_stored) == (0, 1), "the id key is taken on the NFC id"


@pytest.mark.parametrize("with_id", [True, False])
def test_a_decomposed_id_sent_by_api_and_by_file_is_one_event(
    service: DataService, tmp_path: Path, with_id: bool
) -> None:
    """Both paths key the NFC id: the event imported from a file with a decomposed user (and event) id
    is the one the API already stored with composed ids, whether keyed by id or by content."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    checker = EventChecker(service.settings)
    try:
        sent = {"user_id": composed, "item_id": "i1", "type": "view", "timestamp": "2024-01-01T10:00:00Z"}
        table, rejected = checker.validate([{**sent, "event_id": f"e-{composed}"} if with_id else sent])
    finally:
        checker.close()
    assert not rejected
    service.store.append_events(
        table, table.column("user_id").combine_chunks(), table.column("item_id").combine_chunks(), "api"
    )
    header = ["event_id", "user_id", "item_id", "type", "timestamp"]
    row = [f"e-{decomposed}" if with_id else "", decomposed, "i1", "view", "2024-01-01T10:00:00Z"]
    report = load(service, _csv(tmp_path, "same.csv", header, [row]))
    assert (report.rows_written, report.already_stored) == (0, 1)
    assert event_count(service) == 1


def _event_line(event_id: str, context: str | None = None) -> str:
    """One JSON line of an event, with a context given as JSON text (it may be too deep to build in Python)."""
    event = {
        "event_id": event_id,
        "user_id": "u1",
        "item_id": "i1",
        "type": "view",
        "timestamp": "2024-01-01T10:00:00Z",
    }
    line = json.dumps(event)
    return line if context is None else line[:-1] + f', "context": {context}}}'


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH - 1, 10_000])
@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_a_json_line_nested_too_deep_is_rejected_alone(
    service: DataService, tmp_path: Path, depth: int, suffix: str
) -> None:
    """The reader refuses a file holding a line nested deeper than it recurses (the line's own object and the
    values in its innermost brackets count, so a context may nest 126 levels there); only that line is
    rejected, with its number and why, and the lines around it (one with a context at 126) are read."""
    lines = [_event_line("e1"), _event_line("e2", _nested(LINE_DEPTH - 1)), _event_line("e3", _nested(depth))]
    lines += [_event_line(f"e{n}") for n in range(4, 7)]
    path = tmp_path / f"deep{suffix}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        load(service, path)
    (problem,) = info.value.problems
    assert (problem.row, problem.column, problem.reason) == (3, "line", LINE_TOO_DEEP)
    assert problem.value is not None and problem.value.startswith('{"event_id": "e3"')
    assert event_count(service) == 0
    report = load(service, path, on_error=OnError.SKIP)
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (6, 5, 1)
    assert report.problems_by_reason == {f"line: {LINE_TOO_DEEP}": 1}, "its fields are not also reported missing"
    assert report.rejects_file is not None
    with open(report.rejects_file, encoding="utf-8", newline="") as fh:
        (rejected,) = list(csv.DictReader(fh))
    assert (rejected["row"], rejected["reasons"]) == ("3", f"line: {LINE_TOO_DEEP}")
    stored = service.store.scan_events()
    assert sorted(stored.column("event_id").to_pylist()) == ["e1", "e2", "e4", "e5", "e6"]
    contexts = dict(zip(*stored.select(["event_id", "context"]).to_pydict().values(), strict=True))
    assert contexts["e2"] is not None, "the context 126 levels deep is kept"


def test_a_file_of_only_too_deep_lines_says_so(service: DataService, tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(_event_line("e1", _nested(500)) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=f"no line can be read: {LINE_TOO_DEEP}"):
        load(service, path)


@pytest.mark.parametrize("name", ["big.csv", "big.csv.gz"])
def test_a_huge_field_is_reported_on_its_own_line(service: DataService, tmp_path: Path, name: str) -> None:
    """1,001 good lines (the header and 1,000 rows), then a 3 MB field on line 1,002: the error names line
    1,002, where the reader said line 1."""
    header = "event_id,user_id,item_id,type,timestamp,context\n"
    rows = "".join(f"e{n},u1,i1,view,2024-01-01T10:00:00Z,\n" for n in range(1, 1001))
    text = (
        header
        + rows
        + "big,u1,i1,view,2024-01-01T10:00:00Z,"
        + "y" * 3_000_000
        + "\ne9,u1,i1,view,2024-01-01T10:00:00Z,\n"
    )
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    with pytest.raises(InputError) as info:
        load(service, path)
    assert "(line 1002)" in str(info.value) and "longer than" in str(info.value)


def test_a_too_deep_line_is_rejected_alone_whatever_the_files_own_field_names(
    service: DataService, tmp_path: Path
) -> None:
    """The fallback's own helper columns never collide with a file's fields (here named ``n`` and ``k``)."""
    lines = [
        json.dumps({"n": f"u{i}", "k": "i1", "type": "view", "timestamp": "2024-01-01T10:00:00Z"}) for i in range(3)
    ]
    lines[1] = lines[1][:-1] + f', "context": {_nested(10_000)}}}'
    path = tmp_path / "named.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = load(service, path, on_error=OnError.SKIP, columns={"user_id": "n", "item_id": "k"})
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (3, 2, 1)
    assert sorted(service.store.scan_events().column("user_id").to_pylist()) == ["u0", "u2"]
