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
