"""Hostile input in files: JSON nested too deep and ids with invisible characters, checked in the SQL pass."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from shopsense.domain import BAD_ID, MAX_JSON_DEPTH, TOO_DEEP, RecordKind
from shopsense.errors import ValidationFailed
from shopsense.ingest.importer import OnError
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
