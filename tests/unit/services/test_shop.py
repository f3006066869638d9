"""Shop: one object per process that opens the store lazily and once, and hands every shell the same services."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError
from shopsense.services import Shop
from shopsense.services.keys import KeyFile, KeyRing
from shopsense.settings import Settings
from shopsense.store import Store, open_store

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def server(settings: Settings) -> Iterator[Shop]:
    with Shop(settings, server=True) as shop:
        yield shop


def _store_file(settings: Settings) -> Path:
    return settings.data_dir / "shopsense.duckdb"


def test_the_store_is_opened_on_first_use_and_once(settings: Settings) -> None:
    with Shop(settings) as shop:
        keys = shop.keys.storage
        assert isinstance(keys, KeyFile) and keys.path == settings.data_dir / "keys.json"
        assert shop.bundles.root == settings.data_dir / "models"
        assert shop.bundles.versions("default") == []
        assert not _store_file(settings).exists(), "keys and bundles need no store"
        store = shop.store
        assert _store_file(settings).exists()
        assert shop.store is store and shop.data.store is store and shop.marketing.store is store
        assert shop.recommendations is shop.recommendations, "one service: its loaded pipelines last"
        assert shop.recommendations.data is shop.data
    assert not shop.data.is_open, "closed on leaving the block"


def test_a_closed_shop_opens_its_store_again_when_used(settings: Settings) -> None:
    shop = Shop(settings)
    first = shop.store
    shop.close()
    try:
        assert shop.store is not first
        assert shop.marketing.store is shop.store, "no service keeps the closed store"
        assert shop.data.stats().events == 0
    finally:
        shop.close()


def test_the_server_opens_the_store_with_the_serve_options(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict[str, Any]] = []

    def spy(url: str, **options: Any) -> Store:
        opened.append(options)
        return open_store(url, **options)

    monkeypatch.setattr("shopsense.services.shop.open_store", spy)
    monkeypatch.setattr("shopsense.services.data.open_store", spy)
    for server in (True, False):
        with Shop(settings, server=server) as shop:
            assert shop.store is shop.store
    serve, ingest = settings.serve, settings.ingest
    assert opened == [
        {"threads": serve.store_threads, "checkpoint_mb": serve.store_checkpoint_mb},
        {"memory_limit": ingest.memory_limit, "threads": ingest.threads, "migrate": False},
    ]


def test_keys_made_through_the_shop_are_the_ones_the_cli_and_server_read(settings: Settings) -> None:
    with Shop(settings) as shop:
        key, record = shop.keys.create("dashboard", ["marketing"])
        assert shop.keys is shop.keys
    assert KeyRing(settings.data_dir / "keys.json").verify(key) == record


def test_serving_is_built_once_and_then_owns_the_store(server: Shop) -> None:
    store = server.store  # opened with the server's options; before serving() any caller may use it
    serving = server.serving()
    assert server.serving() is serving and serving.store is store
    for name in ("store", "data", "recommendations", "marketing"):
        with pytest.raises(RuntimeError, match=r"Shop\.serving"):
            getattr(server, name)
    assert server.keys.list() == [], "files beside the store stay reachable"


def test_close_stops_serving_before_closing_the_store(settings: Settings) -> None:
    shop = Shop(settings, server=True)
    serving = shop.serving()
    checker = serving.checker
    table, _ = checker.validate([_event("u1", "i1")])
    serving.submit_events(table)  # queued: close lets the writer finish it before the store closes
    shop.close()
    assert not shop.data.is_open
    with Shop(settings) as again:
        assert again.data.stats().events == 1
    try:
        assert shop.serving() is not serving, "a closed shop builds a fresh service"
    finally:
        shop.close()


def _event(user: str, item: str, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "type": "view", "timestamp": NOW.isoformat(), **extra}


def test_user_history_and_export_through_the_service(server: Shop) -> None:
    serving = server.serving()
    times = [(NOW - timedelta(minutes=3 - n)).isoformat() for n in range(3)]
    table, _ = serving.checker.validate(
        [_event("u1", f"i{n}", event_id=f"e{n}", timestamp=t) for n, t in enumerate(times)]
    )
    serving.submit_events(table).result()
    future, rejected = serving.upsert(RecordKind.USERS, [{"user_id": "u1"}, {"user_id": "record-only"}])
    assert future is not None and not rejected
    future.result()

    newest = serving.user_history("u1", 2).result()
    assert newest is not None and len(newest) == 2
    assert [e["event_id"] for e in newest] == ["e2", "e1"], "the newest, newest first"
    assert len(serving.user_history("u1", 100).result() or []) == 3
    assert serving.user_history("record-only", 5).result() == [], "known by record: an empty history, not a 404"
    assert serving.user_history("nobody", 5).result() is None

    exported = serving.user_export("u1").result()
    assert exported is not None and exported.user["user_id"] == "u1" and len(exported.events) == 3
    assert serving.user_export("nobody").result() is None


def test_marketing_runs_on_a_reader_handle_off_the_writer_and_raises_its_errors(server: Shop) -> None:
    serving = server.serving()
    seen: dict[str, Any] = {}

    def work(marketing: Any) -> str:
        seen["thread"] = threading.current_thread()
        seen["store"] = marketing.store
        seen["writer"] = serving.writer.call(lambda store: threading.current_thread()).result()
        return "done"

    assert serving.marketing(work).result() == "done", "the writer answers while marketing work runs"
    assert seen["thread"] not in (threading.current_thread(), seen["writer"])
    assert seen["store"] is not serving.store and seen["store"].url == serving.store.url, "another handle"
    with pytest.raises(ConfigError, match="no customer profiles"):
        serving.marketing(lambda m: m.profiles()).result()


def test_importing_the_shop_imports_no_heavy_library() -> None:
    """The CLI will build a Shop for every command: the model and marketing libraries load only when used."""
    heavy = ("torch", "lightgbm", "sklearn", "scipy.stats", "pandas", "matplotlib")
    script = (
        "import json, sys\nfrom shopsense.services import Shop\n"
        f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
