"""The real CLI on bad options and bad files: the documented exit code and one plain message, never a traceback.

Exit 2 is for options and settings (the command line or a mapping/config file is wrong), exit 1 for
data (the input file cannot be imported). Each message names the file or the option at fault.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from shopsense.cli import app
from shopsense.ingest.validate import LINE_TOO_DEEP

runner = CliRunner()
HEADER = "user_id,item_id,type,timestamp\n"
GOOD = HEADER + "u1,i1,view,2024-01-01T10:00:00Z\nu2,i2,purchase,2024-01-02T10:00:00+01:00\n"


def _cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run the CLI; fail if it raised instead of exiting, and return (exit code, stderr with lines joined)."""
    result: Result = runner.invoke(app, ["--data-dir", str(tmp_path / "data"), *args])
    leaked = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not leaked, f"uncaught {type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.stderr.split())


def _error(tmp_path: Path, code: int, *args: str) -> str:
    """The plain error of a command expected to exit ``code``: one ``error:`` message, short."""
    got, err = _cli(tmp_path, *args)
    assert got == code, err
    assert err.count("error:") == 1, err
    assert len(err) < 600, err
    return err


def _file(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def _events(tmp_path: Path) -> str:
    return _file(tmp_path, "events.csv", GOOD)


# -- bad options and settings: exit 2 ------------------------------------------------------------------


def test_bad_timestamp_format(tmp_path: Path) -> None:
    err = _error(tmp_path, 2, "import", "events", _events(tmp_path), "--timestamp-format", "%Q")
    assert "invalid --timestamp-format: timestamp format '%Q' is not usable" in err


@pytest.mark.parametrize("content", [GOOD, HEADER + "u1,i1,view,2024-01-01T10:00:00+01:00\n"])
def test_bad_timezone_even_when_every_timestamp_has_an_offset(tmp_path: Path, content: str) -> None:
    path = _file(tmp_path, "e.csv", content)
    err = _error(tmp_path, 2, "import", "events", path, "--timezone", "Europe/Londn")
    assert "invalid --timezone: unknown time zone 'Europe/Londn'; did you mean 'Europe/London'" in err


def test_unsupported_encoding(tmp_path: Path) -> None:
    err = _error(tmp_path, 2, "import", "events", _events(tmp_path), "--encoding", "cp1252")
    assert "invalid --encoding: encoding 'cp1252' is not one the reader knows: utf-8, utf-16 or latin-1" in err


def test_bad_mapping_toml(tmp_path: Path) -> None:
    mapping = _file(tmp_path, "m.toml", "[columns\nuser_id = 'customer'\n")
    err = _error(tmp_path, 2, "import", "events", _events(tmp_path), "--mapping", mapping)
    assert f"mapping file {mapping} is not valid TOML" in err


def test_mapping_file_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "m.toml").mkdir()
    err = _error(tmp_path, 2, "import", "events", _events(tmp_path), "--mapping", str(tmp_path / "m.toml"))
    assert "m.toml is a folder, not a file" in err


def test_unknown_map_field(tmp_path: Path) -> None:
    err = _error(tmp_path, 2, "import", "events", _events(tmp_path), "--map", "colour=user_id")
    assert "'colour' is not a events field" in err


def test_channel_value_to_an_unknown_channel(tmp_path: Path) -> None:
    err = _error(tmp_path, 2, "import", "events", _events(tmp_path), "--channel-value", "shop=shoppe")
    assert "--channel-value" in err and "'shoppe' is not a known channel" in err


def test_export_to_an_unknown_extension(tmp_path: Path) -> None:
    err = _error(tmp_path, 2, "export", "users", str(tmp_path / "users.txt"))
    assert "cannot tell the export format from the name 'users.txt'" in err
    assert not (tmp_path / "users.txt").exists()


# -- bad files: exit 1 ---------------------------------------------------------------------------------


def test_latin1_file_read_as_utf8(tmp_path: Path) -> None:
    path = _file(tmp_path, "latin.csv", "item_id,title\ni1,Caf\xe9 cup\n".encode("latin-1"))
    err = _error(tmp_path, 1, "import", "items", path)
    assert f"{path}: not valid UTF-8" in err and "--encoding latin-1" in err


def test_missing_file(tmp_path: Path) -> None:
    err = _error(tmp_path, 1, "import", "events", str(tmp_path / "missing.csv"))
    assert f"{tmp_path / 'missing.csv'}: no such file" in err


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    err = _error(tmp_path, 1, "import", "events", str(tmp_path / "folder.csv"))
    assert "folder.csv: is a folder, not a file" in err


def test_unknown_extension(tmp_path: Path) -> None:
    path = _file(tmp_path, "events.xlsx", GOOD)
    err = _error(tmp_path, 1, "import", "events", path)
    assert f"{path}: unknown file type" in err and "--format" in err


@pytest.mark.parametrize(
    ("content", "reason"), [("", "the file is empty (0 bytes)"), (HEADER, "has a header (user_id, item_id")]
)
def test_empty_file_and_header_only(tmp_path: Path, content: str, reason: str) -> None:
    path = _file(tmp_path, "e.csv", content)
    assert reason in _error(tmp_path, 1, "import", "events", path)


def test_wrong_delimiter(tmp_path: Path) -> None:
    path = _file(tmp_path, "pipes.csv", GOOD.replace(",", "|"))
    err = _error(tmp_path, 1, "import", "events", path, "--delimiter", ",")
    assert "pipes.csv" in err and "--delimiter" in err


def test_corrupt_gzip(tmp_path: Path) -> None:
    body = (HEADER + "".join(f"u{i},i{i},view,2024-01-01T00:00:00Z\n" for i in range(20_000))).encode()
    packed = gzip.compress(body)
    path = _file(tmp_path, "cut.csv.gz", packed[: len(packed) // 2])
    assert f"{path}: the gzip stream is truncated or corrupt" in _error(tmp_path, 1, "import", "events", path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = _file(tmp_path, "junk.parquet", b"PAR1 this is not parquet at all")
    assert f"{path}: cannot be read" in _error(tmp_path, 1, "import", "events", path)


def test_day_first_dates_without_a_format_suggest_one(tmp_path: Path) -> None:
    path = _file(tmp_path, "d.csv", HEADER + "u1,i1,view,06/12/2025 10:00\n")
    got, err = _cli(tmp_path, "import", "events", path)
    assert got == 1
    assert "'%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M'" in err and "--timestamp-format" in err


def test_skip_with_every_row_rejected_fails(tmp_path: Path) -> None:
    path = _file(tmp_path, "c.csv", HEADER.strip() + ",channel\nu1,i1,view,2024-01-01T10:00:00Z,shop\n")
    got, err = _cli(tmp_path, "import", "events", path, "--on-error", "skip")
    assert got == 1
    assert "✓" not in err
    assert f"error: {path}: all 1 rows were rejected, so nothing was imported from it" in err
    assert "--channel-value shop=<channel>" in err
    assert len(list((tmp_path / "data" / "rejects").glob("c.csv.*.rejects.csv"))) == 1
    assert _cli(tmp_path, "import", "events", path, "--channel-value", "shop=store")[0] == 0


def test_generate_into_a_file_path(tmp_path: Path) -> None:
    path = _file(tmp_path, "taken", "x")
    assert path in _error(tmp_path, 1, "generate", "--out", path, "--events", "10")


def test_export_under_a_file(tmp_path: Path) -> None:
    assert _cli(tmp_path, "import", "events", _events(tmp_path))[0] == 0
    taken = _file(tmp_path, "taken", "x")
    err = _error(tmp_path, 1, "export", "events", f"{taken}/events.csv")
    assert f"cannot write {taken}/events.csv" in err


# -- what used to go wrong, now right ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".csv.gz"])
def test_export_writes_the_format_its_name_says_and_imports_back(tmp_path: Path, suffix: str) -> None:
    assert _cli(tmp_path, "import", "events", _events(tmp_path))[0] == 0
    for kind in ("events", "items", "users"):
        path = tmp_path / f"{kind}{suffix}"
        assert _cli(tmp_path, "export", kind, str(path))[0] == 0
        if suffix == ".csv":
            assert path.read_text().splitlines()[0].startswith(f"{kind.rstrip('s')}_id,")
        assert _cli(tmp_path / "again", "import", kind, str(path))[0] == 0, kind


def test_generated_files_import_without_flags(tmp_path: Path) -> None:
    gen = tmp_path / "gen"
    assert _cli(tmp_path, "generate", "--out", str(gen), "--users", "30", "--items", "20", "--events", "300")[0] == 0
    for kind, n in (("items", 20), ("users", 30), ("events", 300)):
        got, err = _cli(tmp_path, "import", kind, str(gen / f"{kind}.parquet"))
        assert got == 0 and f"wrote {n:,} {kind}" in err


# -- ids typed on the command line follow the id rule ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["recommend", "u\u202ex"], "USER 'u\\u202ex'"),
        (["similar", "i\x00x"], "ITEM 'i\\x00x'"),
        (["profiles", "show", "u\u200bx"], "USER 'u\\u200bx'"),
        (["audience", "--item", "i\u2066x\u2069"], "--item 'i\\u2066x\\u2069'"),
    ],
)
def test_an_id_argument_with_an_invisible_character_is_refused(tmp_path: Path, args: list[str], what: str) -> None:
    """Refused as an option error (exit 2) that shows the hidden character, not quietly matched against
    nothing (an unknown user would get trending items)."""
    err = _error(tmp_path, 2, *args)
    assert f"error: {what} contains a control, bidi or zero-width character" in err


def test_a_file_of_user_ids_follows_the_id_rule(tmp_path: Path) -> None:
    users = _file(tmp_path, "users.txt", "user_id\nu1\n\nu\u202e2\n")
    err = _error(tmp_path, 2, "recommend", "--users", users, "--out", str(tmp_path / "r.csv"))
    assert f"{users}: line 4: 'u\\u202e2' contains a control, bidi or zero-width character" in err


def test_a_decomposed_id_argument_finds_the_composed_one(tmp_path: Path) -> None:
    """An id typed decomposed ("cafe" + U+0301, as some keyboards and file systems give it) is put in NFC,
    as every stored id is, so it finds the customer stored as "caf\u00e9"."""
    events = _file(tmp_path, "e.csv", HEADER + "caf\u00e9,i1,purchase,2024-01-01T10:00:00Z\n")
    assert _cli(tmp_path, "import", "events", events, "--extra", "ignore")[0] == 0
    assert _cli(tmp_path, "profiles", "build")[0] == 0
    got, err = _cli(tmp_path, "profiles", "show", "cafe\u0301", "--json")
    assert got == 0, err


def test_a_huge_field_is_reported_on_its_line_by_the_cli(tmp_path: Path) -> None:
    rows = "".join(f"u{n},i1,view,2024-01-01T10:00:00Z\n" for n in range(1, 1001))
    path = _file(tmp_path, "big.csv", HEADER + rows + "u0,i1,view," + "y" * 3_000_000 + "\n")
    err = _error(tmp_path, 1, "import", "events", path)
    assert f"{path}: a line is longer than the 2097152-byte limit (line 1002)" in err


def test_a_json_line_nested_too_deep_is_skipped_alone(tmp_path: Path) -> None:
    deep = '{"a":' * 300 + "1" + "}" * 300
    good = '{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2024-01-01T10:00:00Z"}'
    path = _file(tmp_path, "e.jsonl", "\n".join([good, good[:-1] + f', "context": {deep}}}', good]) + "\n")
    got, err = _cli(tmp_path, "import", "events", path, "--on-error", "skip")
    assert got == 0, err
    (rejects,) = (tmp_path / "data" / "rejects").glob("e.jsonl.*.rejects.csv")
    (row,) = list(csv.DictReader(rejects.open(encoding="utf-8", newline="")))
    assert (row["row"], row["reasons"]) == ("2", f"line: {LINE_TOO_DEEP}")
    assert "wrote 2 events" in err and "1 rejected" in err, err
