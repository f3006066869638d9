"""`shopsense import events` with --no-header, --columns and --zero-quantity, and a derived field refused."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from shopsense.cli import app

runner = CliRunner()
ROWS = "u1,i1,purchase,2024-01-01T00:00:00Z,1\nu2,i2,purchase,2024-01-01T00:01:00Z,0\n"
NAMES = "user_id,item_id,type,timestamp,quantity"


def _import(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "rows.csv"
    path.write_text(ROWS, encoding="utf-8")
    result = runner.invoke(app, ["--data-dir", str(tmp_path / "d"), "import", "events", str(path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_headerless_import_with_a_zero_quantity_policy(tmp_path: Path) -> None:
    code, out, err = _import(tmp_path, "--no-header", "--columns", NAMES, "--zero-quantity", "drop", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["rows_read"], report["rows_written"], report["zero_quantity_dropped"]) == (2, 1, 1)


def test_zero_quantities_are_an_error_by_default_naming_the_row(tmp_path: Path) -> None:
    code, _, err = _import(tmp_path, "--no-header", "--columns", NAMES)
    assert code == 1
    assert "row 2" in err and "is 0" in err and "--zero-quantity" in " ".join(err.split())


def test_column_names_without_no_header_exit_2_naming_the_flag(tmp_path: Path) -> None:
    code, _, err = _import(tmp_path, "--columns", NAMES)
    assert code == 2 and "--no-header" in err


def test_a_hostile_derived_field_exits_2(tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text("header = false\n[derived]\nsession_id = \"read_text('/etc/passwd')\"\n", encoding="utf-8")
    code, _, err = _import(tmp_path, "--mapping", str(mapping), "--columns", NAMES)
    assert code == 2
    said = " ".join(err.split())
    assert "derived field session_id" in said and "'read_text' is not allowed" in said
