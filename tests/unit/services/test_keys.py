"""API keys: one KeyRing logic over either storage, the key file (embedded store) or the api_keys table (PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shopsense.errors import ConfigError
from shopsense.services.keys import KeyFile, KeyRing, KeyStorage, Scope
from shopsense.store import open_store


@pytest.fixture(params=["file", "table"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStorage]:
    if request.param == "file":
        yield KeyFile(tmp_path / "keys.json")
        return
    from shopsense.services.coordination import KeyTable

    url: str = request.getfixturevalue("postgres_url")
    open_store(url).close()  # the schema, api_keys among it
    yield KeyTable(url)


def test_a_created_key_verifies_and_only_its_hash_is_kept(storage: KeyStorage) -> None:
    ring = KeyRing(storage)
    key, record = ring.create(" web ", ["recommend:read", "events:write", "recommend:read"])
    assert key.startswith(f"ss_{record.key_id}_") and record.name == "web"
    assert record.scopes == ("events:write", "recommend:read")
    assert KeyRing(storage).verify(key) == record, "a second ring (another replica, the CLI) reads the same record"
    assert ring.list() == [record] and storage.find(record.key_id) == record
    assert key.split("_", 2)[2] not in json.dumps([r.public() for r in ring.list()])
    assert record.secret_sha256 != key.split("_", 2)[2]


@pytest.mark.parametrize("presented", ["", "ss_", "ss_nope_nope", "xx_abc_def", "ss_{id}_wrong", "ss_{id}"])
def test_malformed_unknown_and_wrong_keys_are_refused(storage: KeyStorage, presented: str) -> None:
    ring = KeyRing(storage)
    _, record = ring.create("web", ["admin"])
    assert ring.verify(presented.format(id=record.key_id)) is None


def test_a_revocation_holds_at_the_next_check_even_for_a_key_verified_before(storage: KeyStorage) -> None:
    server, cli = KeyRing(storage), KeyRing(storage)
    key, record = cli.create("web", ["admin"])
    assert server.verify(key) == record and server.verify(key) == record  # the second from the digest cache
    revoked = cli.revoke(record.key_id)
    assert revoked.revoked_at is not None and not revoked.allows(Scope.ADMIN)
    assert server.verify(key) is None, "the record is read again on every check"
    assert cli.list()[0].revoked_at == revoked.revoked_at
    with pytest.raises(ConfigError, match="no API key"):
        cli.revoke("nope")


def test_scopes_and_names_are_checked_before_anything_is_stored(storage: KeyStorage) -> None:
    ring = KeyRing(storage)
    with pytest.raises(ConfigError, match="not valid"):
        ring.create("web", ["root"])
    with pytest.raises(ConfigError, match="not valid"):
        ring.create("web", [])
    with pytest.raises(ConfigError, match="needs a name"):
        ring.create("  ", ["admin"])
    assert ring.list() == []


def test_only_the_table_is_read_off_the_event_loop(tmp_path: Path) -> None:
    from shopsense.services.coordination import KeyTable

    assert not KeyRing(tmp_path / "keys.json").blocking, "a Path is the key file: the fast path, no thread hop"
    assert KeyTable.blocking


def test_keys_of_a_postgres_store_live_in_its_table(postgres_url: str, tmp_path: Path) -> None:
    from shopsense.services.shop import Shop
    from shopsense.settings import Settings

    with Shop(Settings(data_dir=tmp_path / "data", store_url=postgres_url)) as shop:
        key, record = shop.keys.create("dashboard", ["marketing"])
    assert not (tmp_path / "data" / "keys.json").exists()
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT key_id, name, scopes, revoked_at FROM api_keys").fetchall()
    assert rows == [(record.key_id, "dashboard", ["marketing"], None)]
    assert key.split("_", 2)[2] not in str(rows)
