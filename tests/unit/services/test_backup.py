"""Backup and restore (``DataService.backup`` / ``restore``) on generated shop data, for every store backend.

The oracle: a backup restored into a new store exports the same rows of every kind as the store it was
taken from (event keys, repeated lines, attributes, impressions, campaigns, assignments, profiles), and a
second restore writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError, InputError
from shopsense.ingest.synthetic import GeneratorConfig, generate
from shopsense.services.backup import MANIFEST
from shopsense.services.data import DataService
from shopsense.settings import Settings
from tests.conftest import load
from tests.contracts.test_store import BACKENDS, Backend, exported, plain

TS = pa.timestamp("us", tz="UTC")
T0 = datetime(2024, 2, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def new_store(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> Iterator[Callable[[str], DataService]]:
    """A data service on a new, empty store of the backend (one per name); closed afterwards."""
    backend: Backend = request.param
    services: list[DataService] = []
    urls: list[AbstractContextManager[str]] = []

    def make(name: str) -> DataService:
        scope = backend.empty(tmp_path, name)
        urls.append(scope)
        url = scope.__enter__()
        service = DataService(settings.model_copy(update={"store_url": url}))
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()
    for scope in reversed(urls):
        scope.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shop_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated shop, its last events sent without event_id and 40 of those lines repeated verbatim."""
    folder = tmp_path_factory.mktemp("shop")
    generate(GeneratorConfig(users=120, items=60, events=3_000, days=30, seed=11), folder)
    events = pq.read_table(folder / "events.parquet")
    anonymous = events.slice(2_500).set_column(0, "event_id", pa.nulls(500, pa.string()))
    pq.write_table(
        pa.concat_tables([events.slice(0, 2_500), anonymous, anonymous.slice(0, 40)]), folder / "events.parquet"
    )
    return folder


def _fill(service: DataService, files: Path) -> None:
    """Import the shop, then record impressions (one line twice), two campaigns with assignments and profiles."""
    load(service, files / "items.parquet", RecordKind.ITEMS)
    load(service, files / "users.parquet", RecordKind.USERS, extra="keep")
    load(service, files / "events.parquet")
    store = service.store
    users = [f"user-{i}" for i in range(6)]
    shown = [(f"r{i // 3}", users[i % 6], f"item-{i % 7}", i % 3 + 1, "m1" if i % 4 else None, T0) for i in range(12)]
    shown.append(shown[0])
    names = ("recommendation_id", "user_id", "item_id", "position", "model_version", "timestamp")
    types = (pa.string(), pa.string(), pa.string(), pa.int32(), pa.string(), TS)
    store.append_impressions(
        pa.table({n: pa.array(c, t) for n, c, t in zip(names, zip(*shown, strict=True), types, strict=True)})
    )
    store.save_segment("loyal", "frequency >= 2")
    store.save_segment("big", "monetary > 3")
    for name, variants in (("spring", ["a", "b"]), ("summer", ["x"])):
        store.save_campaign(name, json.dumps({"name": name, "variants": variants}))
        picked = users[:4] if name == "spring" else users[2:]
        rows = {
            "user_id": picked,
            "variant": [variants[i % len(variants)] for i in range(len(picked))],
            "assigned_at": pa.array([T0 + timedelta(hours=i) for i in range(len(picked))], TS),
        }
        store.add_assignments(name, pa.table(rows))
    store.save_profiles(
        pa.table(
            {
                "user_id": users,
                "r_score": pa.array([5, 4, 3, 2, 1, 5], pa.int8()),
                "monetary": [10.0, float("nan"), 0.0, 3.5, float("nan"), 1.0],
                "as_of": pa.array([T0] * 6, TS),
            }
        )
    )


def _everything(service: DataService, scratch: Path) -> dict[str, Any]:
    """Every row the store holds, through its exports and reads, in a fixed order."""
    store = service.store
    scratch.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {kind.value: exported(store, kind, scratch / f"{kind.value}.parquet") for kind in RecordKind}
    rows["impressions"] = store.scan_impressions().to_pylist()
    rows["campaigns"] = {name: json.loads(config) for name, config in store.campaigns().items()}
    rows["assignments"] = {name: store.assignments(name).to_pylist() for name in rows["campaigns"]}
    rows["segments"] = store.saved_segments()
    profiles = store.load_profiles()
    rows["profiles"] = None if profiles is None else plain(profiles.sort_by("user_id"))
    summary = store.summary(top=5).to_dict()
    summary.pop("imports")  # the log of this store's own imports: a restore logs its own
    rows["summary"] = summary
    return rows


def _keys(service: DataService) -> list[tuple[int, int]]:
    """The stored event keys, read from the database itself (the store closed first)."""
    url = service.settings.resolved_store_url
    service.close()
    if url.startswith("duckdb"):
        con = duckdb.connect(url.split(":///", 1)[1], read_only=True)
        try:
            return [tuple(r) for r in con.execute("SELECT key_hi, key_lo FROM events ORDER BY ALL").fetchall()]
        finally:
            con.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute("SELECT key_hi, key_lo FROM events ORDER BY 1, 2").fetchall()]


def test_a_backup_restored_into_a_new_store_holds_the_same_rows_and_keys_and_again_adds_nothing(
    new_store: Callable[[str], DataService], shop_files: Path, tmp_path: Path
) -> None:
    source = new_store("source")
    _fill(source, shop_files)
    done = source.backup(tmp_path / "backup")
    assert done.rows["events"] == 3_040 and done.rows["impressions"] == 13 and done.rows["profiles"] == 6
    assert (done.rows["campaigns"], done.rows["assignments"], done.rows["segments"]) == (2, 8, 2)
    manifest = json.loads((tmp_path / "backup" / MANIFEST).read_text())
    assert {t: e["rows"] for t, e in manifest["tables"].items()} == done.rows
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial folder left behind"

    copy = new_store("copy")
    restored = copy.restore(tmp_path / "backup")
    assert restored.written == done.rows, "every row is new to the new store"
    original = _everything(source, tmp_path / "a")
    assert sum(1 for e in original["events"] if e["event_id"] is None) == 540, "the repeated lines are there"
    assert _everything(copy, tmp_path / "b") == original
    assert restored.summary.events == original["summary"]["events"] == 3_040

    again = copy.restore(tmp_path / "backup")
    assert again.written == dict.fromkeys(done.rows, 0), "nothing added, nothing replaced"
    assert _everything(copy, tmp_path / "c") == original
    assert _keys(copy) == _keys(source), "every event has the key it had"


def _damage_bytes(folder: Path) -> str:
    data = bytearray((folder / "events.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit-pattern, same size
    (folder / "events.parquet").write_bytes(bytes(data))
    return "events.parquet: its SHA-256 is not the manifest's"


def _truncate(folder: Path) -> str:
    data = (folder / "users.parquet").read_bytes()
    (folder / "users.parquet").write_bytes(data[: len(data) // 2])
    return "users.parquet: .* bytes where the manifest says"


def _drop_manifest(folder: Path) -> str:
    (folder / MANIFEST).unlink()
    return "manifest.json: missing: not a shopsense backup, or one whose writing did not finish"


def _drop_file(folder: Path) -> str:
    (folder / "impressions.parquet").unlink()
    return "impressions.parquet: missing from the backup"


def _forge_rows(folder: Path) -> str:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["tables"]["items"]["rows"] += 1
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return "items.parquet: 60 rows where the manifest says 61"


def _future_version(folder: Path) -> str:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["version"] = 2
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return "backup format version 2; this shopsense reads 1"


def _garble_manifest(folder: Path) -> str:
    (folder / MANIFEST).write_text('{"format": "shopsense-backup", "tab')
    return "manifest.json: not valid JSON"


@pytest.mark.parametrize(
    "damage", [_damage_bytes, _truncate, _drop_manifest, _drop_file, _forge_rows, _future_version, _garble_manifest]
)
def test_a_damaged_backup_is_refused_naming_what_is_wrong_and_nothing_is_written(
    shop_files: Path, tmp_path: Path, damage: Callable[[Path], str]
) -> None:
    source = DataService(Settings(data_dir=tmp_path / "source"))
    target = DataService(Settings(data_dir=tmp_path / "target"))
    try:
        _fill(source, shop_files)
        source.backup(tmp_path / "backup")
        message = damage(tmp_path / "backup")
        with pytest.raises(InputError, match=message):
            target.restore(tmp_path / "backup")
        summary = target.stats()
        assert (summary.users, summary.items, summary.events, summary.imports) == (0, 0, 0, [])
        assert target.store.scan_impressions().num_rows == 0 and target.store.campaigns() == {}
    finally:
        source.close()
        target.close()


def test_a_backup_is_not_written_over_an_existing_one_without_force_nor_over_anything_else(
    service: DataService, shop_files: Path, tmp_path: Path
) -> None:
    load(service, shop_files / "items.parquet", RecordKind.ITEMS)
    path = tmp_path / "backup"
    service.backup(path)
    with pytest.raises(ConfigError, match="exists: name a new folder, or pass --force"):
        service.backup(path)
    load(service, shop_files / "events.parquet")
    replaced = service.backup(path, force=True)
    assert replaced.rows["events"] == 3_040
    assert json.loads((path / MANIFEST).read_text())["tables"]["events"]["rows"] == 3_040
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"meow")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    for other in (mine, a_file):
        with pytest.raises(ConfigError, match="is not a shopsense backup: not replaced, even with --force"):
            service.backup(other, force=True)
    assert (mine / "cat.jpg").read_bytes() == b"meow" and a_file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "data", "notes.txt", "photos"]


def test_a_backup_that_fails_midway_leaves_nothing_that_looks_like_a_backup(
    service: DataService, shop_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(service, shop_files / "events.parquet")
    store = service.store

    def broken() -> pa.Table:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "scan_impressions", broken)
    with pytest.raises(OSError, match="No space left"):
        service.backup(tmp_path / "backup")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no backup, and no partial folder"


def test_restore_keeps_the_targets_newer_rows_and_assigned_variants(
    service: DataService, shop_files: Path, tmp_path: Path
) -> None:
    """Restoring into a store in use merges: its own events and a variant it gave stay as they are."""
    other = DataService(Settings(data_dir=tmp_path / "other"))
    try:
        _fill(other, shop_files)
        other.backup(tmp_path / "backup")
    finally:
        other.close()
    events = pq.read_table(shop_files / "events.parquet")
    pq.write_table(events.filter(pc.equal(events["user_id"], "user-0")), tmp_path / "mine.parquet")
    load(service, tmp_path / "mine.parquet")
    mine = service.stats().events
    service.store.save_campaign("spring", json.dumps({"name": "spring", "variants": ["a", "b"]}))
    given = pa.table({"user_id": ["user-0"], "variant": ["b"], "assigned_at": pa.array([T0], TS)})
    service.store.add_assignments("spring", given)
    restored = service.restore(tmp_path / "backup")
    assert restored.written["events"] == 3_040 - mine and restored.summary.events == 3_040
    assert restored.written["campaigns"] == 1, "spring was there as it is in the backup; summer was not"
    spring = {r["user_id"]: r["variant"] for r in service.store.assignments("spring").to_pylist()}
    assert spring["user-0"] == "b", "the target's own assignment is kept"
    assert len(spring) == 4


def test_a_backup_of_the_embedded_store_restores_into_postgresql_with_the_same_rows(
    shop_files: Path, tmp_path: Path, postgres_url: str
) -> None:
    """One backup format for both backends: taken from DuckDB, restored into PostgreSQL."""
    source = DataService(Settings(data_dir=tmp_path / "source"))
    target = DataService(Settings(data_dir=tmp_path / "target", store_url=postgres_url))
    try:
        _fill(source, shop_files)
        source.backup(tmp_path / "backup")
        target.restore(tmp_path / "backup")
        assert _everything(target, tmp_path / "b") == _everything(source, tmp_path / "a")
        assert not any(target.restore(tmp_path / "backup").written.values())
    finally:
        source.close()
        target.close()


def test_an_erased_user_stays_erased_through_any_restore(
    new_store: Callable[[str], DataService], shop_files: Path, tmp_path: Path
) -> None:
    """Backup before an erasure, erase, backup after: restoring the older one, into the store or into a new
    store that got the newer one first, leaves the user out; tombstones travel as hashes only."""
    shop = new_store("shop")
    _fill(shop, shop_files)
    shop.backup(tmp_path / "before")
    gone = shop.store.erase_user("user-2")
    assert gone["events"] > 0 and gone["assignments"] == 2
    shop.backup(tmp_path / "after")
    assert b"user-2" not in (tmp_path / "after" / "erasures.parquet").read_bytes()

    again = shop.restore(tmp_path / "before")
    assert again.skipped > gone["events"], "events, user record, impressions, assignments, profile"
    assert shop.store.scan_events(user_ids=["user-2"]).num_rows == 0
    assert again.written["events"] == again.written["users"] == 0

    fresh = new_store("fresh")
    newer = fresh.restore(tmp_path / "after")
    assert newer.written["erasures"] == 1 and newer.skipped == 0
    older = fresh.restore(tmp_path / "before")
    assert older.skipped == again.skipped and older.written["erasures"] == 0
    assert fresh.store.scan_events(user_ids=["user-2"]).num_rows == 0
    assert "user-2" not in fresh.store.scan_impressions()["user_id"].to_pylist()
    assert all("user-2" not in fresh.store.assignments(c)["user_id"].to_pylist() for c in ("spring", "summer"))
    profiles = fresh.store.load_profiles()
    assert profiles is not None and "user-2" not in profiles["user_id"].to_pylist()
    assert fresh.stats().events == shop.stats().events

    events = pq.read_table(shop_files / "events.parquet")
    back = events.filter(pc.equal(events["user_id"], "user-2")).slice(0, 3).drop_columns(["event_id"])
    pq.write_table(back, tmp_path / "back.parquet")
    load(shop, tmp_path / "back.parquet")  # user-2 comes back after the erasure
    shop.backup(tmp_path / "returned")
    newest = new_store("newest")
    assert newest.restore(tmp_path / "returned").skipped == 0, "their new rows are theirs"
    assert newest.store.scan_events(user_ids=["user-2"]).num_rows == 3
    assert newest.restore(tmp_path / "before").skipped == again.skipped, "the old ones still stay out"
    assert newest.store.scan_events(user_ids=["user-2"]).num_rows == 3
