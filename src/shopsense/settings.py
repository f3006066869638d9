"""One validated Settings object, built from a TOML file and ``SHOPSENSE_*`` variables.

Settings are built by the shell that needs them (CLI command, app factory), never at
import time, so tests and several stores can live in one process.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shopsense.errors import ConfigError

DEFAULT_EVENT_TYPES: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "favourite": 4.0,
    "cart": 6.0,
    "purchase": 10.0,
    "rating": 5.0,
    "return": -5.0,
}
DEFAULT_EVENT_ALIASES: dict[str, str] = {
    "pageview": "view",
    "detail": "view",
    "favorite": "favourite",
    "wishlist": "favourite",
    "add_to_cart": "cart",
    "addtocart": "cart",
    "buy": "purchase",
    "order": "purchase",
    "transaction": "purchase",
    "refund": "return",
    "cancel": "return",
    "cancellation": "return",
}
DEFAULT_CHANNELS = ["web", "app", "store", "email", "sms", "push", "call_center", "other"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventTypeSettings(_Strict):
    """Which behaviour types exist and how much each says about interest.

    Weights are the default confidence a model gives an event of that type; a negative
    weight (returns) lowers interest. Aliases let files use their own words
    ("add_to_cart") while the store keeps one vocabulary.
    """

    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_TYPES))
    aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EVENT_ALIASES))

    @model_validator(mode="after")
    def _aliases_point_at_types(self) -> EventTypeSettings:
        for name in self.weights:
            if name != name.strip().lower() or not name:
                raise ValueError(f"event type {name!r} must be a non-empty lower-case word")
        for alias, target in self.aliases.items():
            if target not in self.weights:
                raise ValueError(f"alias {alias!r} points at unknown event type {target!r}")
        return self

    def canonical(self) -> dict[str, str]:
        """Every accepted spelling (lower-case) mapped to its event type."""
        table = {name: name for name in self.weights}
        table.update({alias.lower(): target for alias, target in self.aliases.items()})
        return table


class IngestSettings(_Strict):
    """Limits that decide what an import accepts and how much memory it may use."""

    max_problems_shown: int = Field(50, ge=1, description="problems listed before '… and N more'")
    memory_limit: str = Field("1GB", description="DuckDB memory limit during imports; spills beyond it")
    threads: int = Field(2, ge=1, description="DuckDB worker threads")
    min_timestamp: str = Field("1970-01-01T00:00:00Z", description="earliest event time accepted")
    max_future_seconds: int = Field(86_400, ge=0, description="how far past 'now' an event may be")
    max_id_length: int = Field(256, ge=1)
    max_text_length: int = Field(65_536, ge=1, description="longest title/description/context accepted")
    max_line_bytes: int = Field(2_097_152, ge=1024, description="longest CSV/JSON line read")


class ServeSettings(_Strict):
    """How ``shopsense serve`` listens, whom it lets in and how hard it may be pushed."""

    host: str = Field("127.0.0.1", description="listen address; 127.0.0.1 keeps it on this machine")
    port: int = Field(8000, ge=1, le=65535)
    pipeline: str = Field("default", description="the pipeline whose newest (or pinned) bundle is served")
    max_batch: int = Field(10_000, ge=1, description="most events (or items/users) one request may carry")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    rate_per_second: float = Field(2_000.0, gt=0, description="requests per second allowed per API key")
    rate_burst: int = Field(4_000, ge=1, description="requests a key may make at once before the rate applies")
    cors_origins: list[str] = Field(default_factory=list, description="browser origins allowed to call the API")
    commit_wait_ms: float = Field(
        2.0, ge=0, description="how long an event write waits to share a journal sync with others"
    )
    parse_processes: int = Field(
        1, ge=0, le=8, description="processes beside the server that read large event batches (0: its thread pool)"
    )
    store_threads: int = Field(
        1, ge=1, description="DuckDB worker threads of the server's store (its work is small commits and reads)"
    )
    live_threads: int = Field(
        2, ge=1, le=64, description="recommendations computed at once; more wait (stored and cached ones never do)"
    )
    store_checkpoint_mb: int = Field(
        1024, ge=1, description="the server's store folds its write-ahead log into the file at this size"
    )
    opentelemetry: bool = Field(
        False, description="FastAPI's OpenTelemetry spans, metrics and logs, to the providers this process sets up"
    )
    reload_seconds: float = Field(30.0, ge=0, description="how often to look for a newer model bundle (0: never)")
    attribution_hours: float = Field(24.0, gt=0, description="clicks/purchases this soon after an impression count")
    precompute_k: int = Field(
        10, ge=0, le=100, description="items per precomputed answer, written at training (0: compute every answer)"
    )
    precompute_users: int = Field(
        100_000, ge=0, description="the most recently active users whose default answers training precomputes"
    )


class Settings(_Strict):
    """Everything configurable in shopsense; see ``config/default.toml`` for the commented file."""

    data_dir: Path = Path(".shopsense")
    store_url: str | None = Field(None, description="defaults to duckdb:///<data_dir>/shopsense.duckdb")
    channels: list[str] = Field(default_factory=lambda: list(DEFAULT_CHANNELS))
    event_types: EventTypeSettings = Field(default_factory=EventTypeSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @field_validator("channels")
    @classmethod
    def _lower_channels(cls, value: list[str]) -> list[str]:
        return [c.strip().lower() for c in value]

    @property
    def resolved_store_url(self) -> str:
        """The store URL, defaulting to a DuckDB file inside the data directory."""
        return self.store_url or f"duckdb:///{self.data_dir / 'shopsense.duckdb'}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults < TOML file < ``SHOPSENSE_*`` env < explicit overrides.

    Args:
        config_file: a TOML file; defaults to ``$SHOPSENSE_CONFIG`` when set.
        overrides: top-level keys (``data_dir``, ``store_url``) given on the command line;
            ``None`` values are ignored so callers can pass optional flags straight through.
    """
    path = config_file or (Path(os.environ["SHOPSENSE_CONFIG"]) if os.environ.get("SHOPSENSE_CONFIG") else None)
    values = read_toml(path, "config file") if path is not None else {}
    for key, env in (("data_dir", "SHOPSENSE_DATA_DIR"), ("store_url", "SHOPSENSE_STORE_URL")):
        if os.environ.get(env):
            values[key] = os.environ[env]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid settings{where}:\n{explain_validation(exc)}") from exc


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file, turning a missing or malformed file into a ConfigError naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{what} {path} is a folder, not a file") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc


def explain_validation(exc: ValidationError) -> str:
    """One indented ``key.path: message`` line per pydantic error."""
    return "\n".join(f"  {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
