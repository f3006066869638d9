"""One validated Settings object, built from a TOML file and ``SHOPSENSE_*`` variables.

Settings are built by the shell that needs them (CLI command, app factory), never at
import time, so tests and several stores can live in one process.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shopsense.errors import ConfigError
from shopsense.spark.session import SparkConfig

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
    from pydantic_settings.sources.types import ConfigFileSourceType

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
    zero_quantity: Literal["keep", "drop", "error"] = Field(
        "error", description="events with quantity 0: keep them, drop them (counted), or reject them"
    )


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
    cache_mb: float = Field(
        256.0, ge=0, description="MiB of computed answers kept for repeated questions, least recent out (0: none)"
    )
    store_checkpoint_mb: int = Field(
        1024, ge=1, description="the server's store folds its write-ahead log into the file at this size"
    )
    malloc_arenas: int = Field(
        2, ge=0, description="glibc malloc arenas of the server process (0: glibc's default of 8 per core)"
    )
    trim_seconds: float = Field(
        30.0, ge=0, description="how often the server hands freed native memory back to the system (0: never)"
    )
    opentelemetry: bool = Field(
        False, description="FastAPI's OpenTelemetry spans, metrics and logs, to the providers this process sets up"
    )
    reload_seconds: float = Field(30.0, ge=0, description="how often to look for a newer model bundle (0: never)")
    sync_ms: float = Field(
        100.0,
        gt=0,
        description="how often a replica on a PostgreSQL store reads the events and erasures other replicas committed",
    )
    attribution_hours: float = Field(24.0, gt=0, description="clicks/purchases this soon after an impression count")
    precompute_k: int = Field(
        10, ge=0, le=100, description="items per precomputed answer, written at training (0: compute every answer)"
    )
    precompute_users: int = Field(
        100_000, ge=0, description="the most recently active users whose default answers training precomputes"
    )


class JobsSettings(_Strict):
    """How long work (training, profile builds, audiences) runs beside the server: as jobs, off the request
    and ingest paths (see ``shopsense jobs``)."""

    workers: int = Field(
        1,
        ge=1,
        le=4,
        description="jobs run at once, each on its own store handle (a PostgreSQL connection of the process's "
        "16, shopsense.store.pool); more wait in the queue",
    )


class DashboardSettings(_Strict):
    """The web dashboard served beside the API (``/``): its sign-in sessions."""

    session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="how long a dashboard sign-in lasts before the key must be given again"
    )
    secure_cookie: Literal["auto", "always", "never"] = Field(
        "auto",
        description="the session cookie's Secure flag: auto = when the request came over https (behind a proxy, "
        "run uvicorn with --proxy-headers), always (the usual choice behind a TLS proxy), never (plain-http tests)",
    )


class Settings(_Strict):
    """Everything configurable in shopsense; see ``config/default.toml`` for the commented file."""

    data_dir: Path = Path(".shopsense")
    store_url: str | None = Field(None, description="defaults to duckdb:///<data_dir>/shopsense.duckdb")
    channels: list[str] = Field(default_factory=lambda: list(DEFAULT_CHANNELS))
    event_types: EventTypeSettings = Field(default_factory=EventTypeSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    spark: SparkConfig = Field(default_factory=SparkConfig)

    @field_validator("channels")
    @classmethod
    def _lower_channels(cls, value: list[str]) -> list[str]:
        return [c.strip().lower() for c in value]

    @property
    def resolved_store_url(self) -> str:
        """The store URL, defaulting to a DuckDB file inside the data directory."""
        return self.store_url or f"duckdb:///{self.data_dir / 'shopsense.duckdb'}"


ENV_PREFIX = "SHOPSENSE_"
"""Every setting is also an environment variable: ``SHOPSENSE_`` + its key path joined by ``__``, in capitals."""
ENV_DELIMITER = "__"
OTHER_VARIABLES: dict[str, str] = {
    "SHOPSENSE_CONFIG": "the settings file to read (load_settings)",
    "SHOPSENSE_WORKER_SETTINGS": "the resolved settings (JSON) `serve --workers` hands its worker processes",
}
"""``SHOPSENSE_*`` variables that are not settings keys but are read elsewhere, so not refused as misspelled.

Add a variable here when code starts reading one; anything else with the prefix is refused with a suggestion.
"""


@dataclass
class _Load:
    """What one ``load_settings`` call passes to its sources, and what the TOML source read (for error lines)."""

    path: Path | None
    toml: dict[str, Any] = field(default_factory=dict)


_LOAD: ContextVar[_Load | None] = ContextVar("shopsense_settings_load", default=None)


@functools.cache
def _loader() -> type[Settings]:
    """The pydantic-settings class that builds Settings; made on first use, since importing pydantic-settings
    (asyncio, dotenv, its cloud sources) would slow down every start of the CLI, ``--help`` included."""
    from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

    class ConfigFile(TomlConfigSettingsSource):
        """pydantic-settings' TOML source for the chosen file, stricter: a missing, unreadable or malformed file is
        an error naming it (the stock source skips a missing file), and the data read is kept for error messages."""

        def _read_files(self, files: ConfigFileSourceType | None, deep_merge: bool = False) -> dict[str, Any]:
            load = _LOAD.get()
            assert load is not None and load.path is not None
            load.toml = read_toml(load.path, "config file")
            return load.toml

    class SettingsLoader(BaseSettings, Settings):
        """Settings as pydantic-settings builds them; the first source holding a key wins: flags, env, file."""

        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=ENV_DELIMITER,
            env_ignore_empty=True,  # SHOPSENSE_DATA_DIR= (empty) means unset, as before
            case_sensitive=False,
            env_file=None,
            extra="forbid",
            frozen=True,
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            load = _LOAD.get()
            if load is None or load.path is None:
                return init_settings, env_settings
            return init_settings, env_settings, ConfigFile(settings_cls, toml_file=load.path)

    return SettingsLoader


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults < TOML file < ``SHOPSENSE_*`` env < explicit overrides.

    Every key is also a variable: ``SHOPSENSE_SERVE__PORT=9001``, ``SHOPSENSE_INGEST__THREADS=1``, and tables or
    lists as JSON (``SHOPSENSE_EVENT_TYPES__WEIGHTS='{"view": 1}'``, ``SHOPSENSE_CHANNELS='["web"]'``). A misspelled
    ``SHOPSENSE_*`` variable, an unknown key in the file or a bad value raises ConfigError naming it.

    Args:
        config_file: a TOML file; defaults to ``$SHOPSENSE_CONFIG`` when set.
        overrides: top-level keys (``data_dir``, ``store_url``) given on the command line;
            ``None`` values are ignored so callers can pass optional flags straight through.
    """
    path = config_file or (Path(os.environ["SHOPSENSE_CONFIG"]) if os.environ.get("SHOPSENSE_CONFIG") else None)
    env = _shopsense_environment()
    _check_environment(env)
    given = {k: v for k, v in overrides.items() if v is not None}
    loader = _loader()
    from pydantic_settings import SettingsError

    load = _Load(path)
    token = _LOAD.set(load)
    try:
        loaded = loader(**given)
    except ValidationError as exc:
        lines = [_explain_error(e, given, env, load) for e in exc.errors()]
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from exc
    except SettingsError as exc:  # a value pydantic-settings could not decode, past _check_environment's checks
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"invalid settings in the SHOPSENSE_* environment: {exc}{cause}") from exc
    finally:
        _LOAD.reset(token)
    values = {name: getattr(loaded, name) for name in Settings.model_fields}
    return Settings.model_construct(_fields_set=set(loaded.model_fields_set), **values)


def _env_names(model: type[BaseModel], prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """Every variable name a model's settings answer to (upper case), with the annotation it sets.

    A section (``SHOPSENSE_SERVE``) takes JSON for the whole table as well as its keys one by one; a dict or list
    key takes JSON for the whole value (its entries are not variables of their own).
    """
    names: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        names[env] = info.annotation
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names.update(_env_names(info.annotation, env + ENV_DELIMITER))
    return names


def _is_json_value(annotation: Any) -> bool:
    """Whether a variable for this annotation holds JSON (a table or a list) rather than plain text."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return get_origin(annotation) in (dict, list)


def _shopsense_environment() -> dict[str, tuple[str, str]]:
    """The ``SHOPSENSE_*`` variables set (any case, as pydantic-settings reads them): upper name → (name, value)."""
    return {k.upper(): (k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}


def _check_environment(env: dict[str, tuple[str, str]]) -> None:
    """Refuse misspelled ``SHOPSENSE_*`` variables (with a suggestion) and JSON variables that are not JSON.

    pydantic-settings ignores variables that match no key, so a typo would silently leave the default in place.
    """
    known = _env_names(Settings)
    problems: list[str] = []
    for upper, (name, value) in sorted(env.items()):
        if upper in OTHER_VARIABLES:
            continue
        if upper not in known:
            problems.append(f"  {name}: {_unknown_variable(upper, known)}")
        elif value and _is_json_value(known[upper]):
            try:
                json.loads(value)
            except ValueError as exc:
                example = """'["web", "app"]'""" if get_origin(known[upper]) is list else """'{"key": value}'"""
                problems.append(f"  {name}={_clip(value)}: not valid JSON ({exc}); give it as JSON, e.g. {example}")
    if problems:
        raise ConfigError("invalid SHOPSENSE_* environment variables:\n" + "\n".join(problems))


def _unknown_variable(upper: str, known: dict[str, Any]) -> str:
    """Why a ``SHOPSENSE_*`` name is not a setting, with the nearest real one."""
    for whole, annotation in known.items():
        if upper.startswith(whole + ENV_DELIMITER) and get_origin(annotation) in (dict, list):
            return f"not a setting; {whole} is set as a whole, as JSON"
    suffixes = [k.removeprefix(ENV_PREFIX) for k in (*known, *OTHER_VARIABLES)]
    close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.6)
    if close:
        return f"not a setting; did you mean {ENV_PREFIX}{close[0]}?"
    return (
        f"not a setting; variables are {ENV_PREFIX}<KEY> or {ENV_PREFIX}<SECTION>{ENV_DELIMITER}<KEY> "
        "for the keys in config/default.toml"
    )


def _explain_error(error: Any, given: dict[str, Any], env: dict[str, tuple[str, str]], load: _Load) -> str:
    """One ``where: message`` line for a pydantic error, naming the source that gave the value.

    The highest-precedence source holding the key wins: a flag (override), then a variable, then the file.
    """
    loc = tuple(str(p) for p in error["loc"])
    key = ".".join(loc) or "(top)"
    msg = error["msg"]
    if _holds(given, loc):
        return f"  {key}: {msg}"
    for depth in range(len(loc), 0, -1):
        upper = ENV_PREFIX + ENV_DELIMITER.join(loc[:depth]).upper()
        if upper in env:
            name, value = env[upper]
            at = f" (at {'.'.join(loc[depth:])})" if depth < len(loc) else ""
            return f"  {name}={_clip(value)}{at}: {msg}"
    # A value from the file, or a check on a whole table (event_types): name every source that set part of it.
    below = ENV_PREFIX + ENV_DELIMITER.join(loc).upper() + ENV_DELIMITER
    sources = [name for upper, (name, _) in sorted(env.items()) if upper.startswith(below)]
    in_file = load.path is not None and _holds(load.toml, loc)
    if in_file and not sources:
        return f"  {key} in {load.path}: {msg}"
    sources += [str(load.path)] if in_file else []
    return f"  {key}: {msg}" + (f" (set in {', '.join(sources)})" if sources else "")


def _holds(values: dict[str, Any], loc: tuple[str, ...]) -> bool:
    """Whether nested ``values`` contain the key path ``loc`` (case-insensitively, as variables are read)."""
    node: Any = values
    for part in loc:
        if not isinstance(node, dict):
            return False
        match = [k for k in node if str(k).lower() == part.lower()]
        if not match:
            return False
        node = node[match[0]]
    return True


def _clip(value: str, limit: int = 80) -> str:
    """A variable's value quoted for a message, shortened when long."""
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


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
