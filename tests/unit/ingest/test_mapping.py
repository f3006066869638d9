"""Column mappings from TOML files and CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError
from shopsense.ingest.mapping import load_mapping, parse_pairs


def test_toml_mapping_with_cli_overrides(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('kind = "events"\ntimezone = "Europe/London"\n[columns]\nuser_id = "customer"\nitem_id = "sku"\n')
    mapping = load_mapping(path, RecordKind.EVENTS, {"columns": {"item_id": "product"}, "extra": "ignore"})
    assert mapping.columns == {"user_id": "customer", "item_id": "product"}
    assert mapping.timezone == "Europe/London"
    assert mapping.resolve(["customer", "product", "type", "timestamp"]) == {
        "user_id": "customer",
        "item_id": "product",
        "type": "type",
        "timestamp": "timestamp",
    }


def test_mapping_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'colour' is not a events field"):
        load_mapping(None, RecordKind.EVENTS, {"columns": {"colour": "c"}})
    with pytest.raises(ConfigError, match="both a column and a constant"):
        load_mapping(None, RecordKind.EVENTS, {"columns": {"channel": "c"}, "constants": {"channel": "web"}})
    items = tmp_path / "items.toml"
    items.write_text('kind = "items"\n')
    with pytest.raises(ConfigError, match="is for 'items', but 'events' are imported"):
        load_mapping(items, RecordKind.EVENTS, {})
    with pytest.raises(ConfigError, match="--map expects FIELD=VALUE"):
        parse_pairs(["user_id"], "--map")


def test_time_zone_and_timestamp_format_are_checked_before_any_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^invalid --timezone: unknown time zone 'Europe/Londn'; did you mean 'Europe/London'"
    ):
        load_mapping(None, RecordKind.EVENTS, {"timezone": "Europe/Londn"})
    with pytest.raises(ConfigError, match=r"^invalid --timestamp-format: timestamp format '%Q' is not usable: .*%Q"):
        load_mapping(None, RecordKind.EVENTS, {"timestamp_format": "%Q"})
    with pytest.raises(ConfigError, match="'dd/mm/yyyy' has no %-directive"):
        load_mapping(None, RecordKind.EVENTS, {"timestamp_format": "dd/mm/yyyy"})
    with pytest.raises(ConfigError, match=r"^invalid --category-separator: String should have at least 1 character"):
        load_mapping(None, RecordKind.ITEMS, {"category_separator": ""})
    given = {"timezone": "europe/london", "timestamp_format": "unix_ms", "encoding": "Latin1"}
    mapping = load_mapping(None, RecordKind.EVENTS, given)
    assert (mapping.timezone, mapping.timestamp_format, mapping.encoding) == ("Europe/London", "unix_ms", "latin-1")
    path = tmp_path / "m.toml"
    path.write_text('timezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match=r"mapping file .*m\.toml, timezone: unknown time zone 'Mars/Olympus'"):
        load_mapping(path, RecordKind.EVENTS, {})


def test_channel_values_are_merged_and_only_for_events(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[channel_values]\nshop = "store"\nonline = "web"\n')
    mapping = load_mapping(path, RecordKind.EVENTS, {"channel_values": {"online": "app"}})
    assert mapping.channel_values == {"shop": "store", "online": "app"}
    with pytest.raises(ConfigError, match="channel_values applies to events only"):
        load_mapping(None, RecordKind.USERS, {"channel_values": {"shop": "store"}})


def test_unreadable_mapping_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match=r"dir\.toml is a folder, not a file"):
        load_mapping(tmp_path / "dir.toml", RecordKind.EVENTS, {})
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[constants]\nchannel = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.toml is not UTF-8 text"):
        load_mapping(latin, RecordKind.EVENTS, {})
