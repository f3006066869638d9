"""Settings: one validated object from defaults, TOML, environment and flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopsense.errors import ConfigError
from shopsense.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_default_toml_documents_exactly_the_defaults() -> None:
    assert load_settings(ROOT / "config" / "default.toml") == Settings()


def test_precedence_file_env_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('data_dir = "from-file"\n[ingest]\nthreads = 1\n')
    assert load_settings(cfg).data_dir == Path("from-file")
    monkeypatch.setenv("SHOPSENSE_DATA_DIR", "from-env")
    assert load_settings(cfg).data_dir == Path("from-env")
    assert load_settings(cfg, data_dir="from-flag").data_dir == Path("from-flag")
    assert load_settings(cfg).ingest.threads == 1


def test_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest]\nthreads = 0\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"ingest.threads.*\n.*ingest.bogus"):
        load_settings(bad)
    (tmp_path / "broken.toml").write_text("data_dir = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_aliases_must_point_at_known_types() -> None:
    with pytest.raises(ConfigError, match="alias 'basket' points at unknown event type 'bag'"):
        load_settings(None, event_types={"aliases": {"basket": "bag"}})


def test_store_url_defaults_inside_the_data_dir() -> None:
    assert Settings(data_dir=Path("/srv/shop")).resolved_store_url == "duckdb:////srv/shop/shopsense.duckdb"
