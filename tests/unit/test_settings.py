"""Settings: one validated object from defaults, TOML, environment and flags."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shopsense.errors import ConfigError
from shopsense.settings import DEFAULT_EVENT_TYPES, OTHER_VARIABLES, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SHOPSENSE_* variable from the shell running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("SHOPSENSE_"):
            monkeypatch.delenv(name)


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


def test_nested_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPSENSE_SERVE__PORT", "9001")
    monkeypatch.setenv("SHOPSENSE_INGEST__THREADS", "1")
    monkeypatch.setenv("SHOPSENSE_SERVE__OPENTELEMETRY", "true")
    monkeypatch.setenv("SHOPSENSE_STORE_URL", "")  # empty means unset
    settings = load_settings()
    assert (settings.serve.port, settings.ingest.threads, settings.serve.opentelemetry) == (9001, 1, True)
    assert settings.serve.host == "127.0.0.1" and settings.store_url is None
    assert type(settings) is Settings


def test_tables_and_lists_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = {**DEFAULT_EVENT_TYPES, "view": 0.5, "share": 3.0}
    monkeypatch.setenv("SHOPSENSE_EVENT_TYPES__WEIGHTS", json.dumps(weights))
    monkeypatch.setenv("SHOPSENSE_CHANNELS", '["Web", "kiosk"]')
    monkeypatch.setenv("SHOPSENSE_SERVE", '{"port": 7000, "cors_origins": ["https://shop.example"]}')
    monkeypatch.setenv("SHOPSENSE_SERVE__HOST", "0.0.0.0")
    settings = load_settings()
    assert settings.event_types.weights == weights
    assert settings.channels == ["web", "kiosk"]
    assert (settings.serve.port, settings.serve.host) == (7000, "0.0.0.0")
    assert settings.serve.cors_origins == ["https://shop.example"]


def test_precedence_file_env_explicit_for_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[serve]\nport = 1234\nhost = "0.0.0.0"\n[ingest]\nthreads = 3\n')
    assert load_settings(cfg).serve.port == 1234
    monkeypatch.setenv("SHOPSENSE_SERVE__PORT", "9001")
    settings = load_settings(cfg)
    assert (settings.serve.port, settings.serve.host, settings.ingest.threads) == (9001, "0.0.0.0", 3)
    settings = load_settings(cfg, serve={"port": 5000})
    assert (settings.serve.port, settings.serve.host) == (5000, "0.0.0.0")
    monkeypatch.setenv("SHOPSENSE_CONFIG", str(cfg))
    assert load_settings().ingest.threads == 3


def test_a_bad_variable_is_named_with_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPSENSE_SERVE__PORT", "abc")
    with pytest.raises(ConfigError, match=r"SHOPSENSE_SERVE__PORT='abc': Input should be a valid integer"):
        load_settings()
    monkeypatch.setenv("SHOPSENSE_SERVE__PORT", "70000")
    cfg = tmp_path / "s.toml"
    cfg.write_text("[serve]\nport = 1234\n")
    with pytest.raises(ConfigError, match=r"SHOPSENSE_SERVE__PORT='70000': Input should be less than"):
        load_settings(cfg)
    monkeypatch.delenv("SHOPSENSE_SERVE__PORT")
    monkeypatch.setenv("SHOPSENSE_EVENT_TYPES__WEIGHTS", '{"view": "lots"}')
    with pytest.raises(ConfigError, match=r"SHOPSENSE_EVENT_TYPES__WEIGHTS='\{\"view\": \"lots\"\}' \(at view\)"):
        load_settings()
    monkeypatch.setenv("SHOPSENSE_EVENT_TYPES__WEIGHTS", "{view: 1}")
    with pytest.raises(ConfigError, match=r"SHOPSENSE_EVENT_TYPES__WEIGHTS='\{view: 1\}': not valid JSON"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("SHOPSENSE_SERVE__PROT", "did you mean SHOPSENSE_SERVE__PORT?"),
        ("SHOPSENSE_SERVEE__PORT", "did you mean SHOPSENSE_SERVE__PORT?"),
        ("SHOPSENSE_DATADIR", "did you mean SHOPSENSE_DATA_DIR?"),
        ("shopsense_ingest__thread", "did you mean SHOPSENSE_INGEST__THREADS?"),
        ("SHOPSENSE_EVENT_TYPES__WEIGHTS__VIEW", "SHOPSENSE_EVENT_TYPES__WEIGHTS is set as a whole, as JSON"),
        ("SHOPSENSE_XYZZY", "not a setting"),
    ],
)
def test_a_misspelled_variable_is_refused_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, name: str, hint: str
) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=rf"{name}: .*{hint}"):
        load_settings()


def test_variables_read_elsewhere_are_not_settings_typos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(OTHER_VARIABLES) == {"SHOPSENSE_CONFIG", "SHOPSENSE_WORKER_SETTINGS"}
    cfg = tmp_path / "s.toml"
    cfg.write_text("")
    monkeypatch.setenv("SHOPSENSE_CONFIG", str(cfg))
    assert load_settings() == Settings()


def test_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest]\nthreads = 0\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"ingest.threads in .*bad.toml.*\n.*ingest.bogus in .*bad.toml"):
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
