"""Erasure lasts: no bundle answers for an erased user again, whichever bundle is served or reloaded.

Each test works on a copy of the session's trained data directory (a bundle with precomputed answers).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pytest

from shopsense.services.answers import ANSWERS_FILE
from shopsense.services.serving import ServingService
from shopsense.settings import Settings, load_settings
from shopsense.store import open_store
from shopsense.store.base import Store


class Server:
    """A server over one data directory, stopped and started again like a process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.service: ServingService | None = None

    def start(self) -> ServingService:
        self.store = open_store(self.settings.resolved_store_url)
        self.service = ServingService(self.settings, self.store)
        return self.service

    def stop(self) -> None:
        if self.service is not None:
            self.service.close()
        if self.store is not None:
            self.store.close()
        self.service = self.store = None


@pytest.fixture
def server(trained: Path, tmp_path: Path) -> Iterator[Server]:
    shutil.copytree(trained, tmp_path / "data")
    running = Server(load_settings(None, data_dir=tmp_path / "data"))
    yield running
    running.stop()


def _answered_user(service: ServingService) -> tuple[str, int]:
    """A user the bundle holds a stored answer for, with the answer's size."""
    served = service.served
    assert served is not None and served.answers is not None
    k = served.answers.k
    for user in pc.unique(served.answers.table.column("user_id")).to_pylist():
        if service.ready(user, k) is not None:
            return user, k
    raise AssertionError("no stored answer is served")


def _come_back(service: ServingService, user: str, events: list[dict[str, object]]) -> None:
    """The same id posts as many events as it had before the erasure (the same items, new event ids)."""
    again = [
        {"user_id": user, "item_id": e["item_id"], "type": e["type"], "timestamp": e["timestamp"], "event_id": f"b{i}"}
        for i, e in enumerate(events)
    ]
    table, rejected = service.checker.validate(json.loads(json.dumps(again, default=str)))
    assert not rejected
    service.submit_events(table).result()
    assert service.live.count(user) == len(events)


def _history(service: ServingService, user: str) -> list[dict[str, object]]:
    rows = service.user_history(user, 100_000).result()
    assert rows
    return rows


def _answer_users(models: Path) -> dict[str, set[str]]:
    return {
        str(path.relative_to(models)): set(ipc.open_file(pa.memory_map(str(path))).read_all()["user_id"].to_pylist())
        for path in sorted(models.glob(f"*/*/{ANSWERS_FILE}"))
    }


def _older_copy(models: Path) -> Path:
    """Make the served bundle two versions: a copy of it under an older version name; returns the copy."""
    (served,) = [p for p in models.glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    older = served.with_name("20000101T000000-000000")
    shutil.copytree(served, older)
    manifest = json.loads((older / "bundle.json").read_text())
    manifest["version"] = older.name
    (older / "bundle.json").write_text(json.dumps(manifest))
    return older


def test_after_a_restart_the_returning_id_gets_no_answer_stored_before_its_erasure(server: Server) -> None:
    service = server.start()
    user, k = _answered_user(service)
    events = _history(service, user)
    receipt = service.erase_user(user)
    assert receipt.deleted["events"] == len(events)
    assert receipt.models["trained_on_user"] and receipt.models["answers_removed"] > 0
    assert receipt.models["forgotten_at"] == "next training"
    server.stop()
    service = server.start()
    _come_back(service, user, events)
    assert service.ready(user, k) is None, "computed from the new history, never the stored answer"


def test_after_a_rollback_the_erased_user_gets_no_stored_answer(server: Server) -> None:
    older = _older_copy(server.settings.data_dir / "models")
    service = server.start()
    assert service.served is not None and service.served.info.version != older.name
    user, k = _answered_user(service)
    events = _history(service, user)
    service.erase_user(user)
    _come_back(service, user, events)
    assert service.rollback().version == older.name
    assert service.ready(user, k) is None


def test_a_bundle_that_still_holds_the_users_answers_is_checked_against_the_tombstones(server: Server) -> None:
    """A training that read the events before the erasure writes its bundle after it: loading it must
    still forget the user (restart, reload, rollback or pin)."""
    models = server.settings.data_dir / "models"
    older = _older_copy(models)
    pristine = (older / ANSWERS_FILE).read_bytes()
    service = server.start()
    user, k = _answered_user(service)
    events = _history(service, user)
    service.erase_user(user)
    (older / ANSWERS_FILE).write_bytes(pristine)  # as if written after the purge
    assert user in _answer_users(models)[f"{older.parent.name}/{older.name}/{ANSWERS_FILE}"]
    _come_back(service, user, events)
    service.rollback()
    assert service.ready(user, k) is None
    server.stop()
    service = server.start()
    assert service.served is not None and service.served.info.version == older.name, "still pinned"
    assert service.ready(user, k) is None


def test_every_stored_bundles_answers_lose_the_erased_user(server: Server) -> None:
    models = server.settings.data_dir / "models"
    _older_copy(models)
    service = server.start()
    user, k = _answered_user(service)
    before = _answer_users(models)
    assert len(before) == 2 and all(user in users for users in before.values())
    service.erase_user(user)
    after = _answer_users(models)
    assert after == {name: users - {user} for name, users in before.items()}
    other = next(iter(after[next(iter(after))]))
    assert service.ready(other, k) is not None, "the served (memory-mapped) answers still work for others"
    assert not list(models.glob("*/*/.*partial")), "no temporary file left"
