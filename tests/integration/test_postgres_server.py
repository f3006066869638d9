"""The test PostgreSQL server (tests/postgres.py) works: a fresh database per test, isolated from the others."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest

from tests import postgres

pytestmark = pytest.mark.integration


def test_a_fresh_database_takes_a_table_copied_rows_and_gives_them_back(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://shopsense@127.0.0.1:")
    rows = [(1, "cup", 3.5), (2, "pot, large", None), (3, 'tab\tand "quote"', -1.25)]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        assert conn.execute("SHOW server_version_num").fetchone() >= ("150000",)
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, title text NOT NULL, price double precision)")
        with conn.cursor() as cur, cur.copy("COPY items (id, title, price) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    with psycopg.connect(postgres_url) as conn:  # committed: a new connection sees them
        assert conn.execute("SELECT id, title, price FROM items ORDER BY id").fetchall() == rows


def test_two_fresh_databases_are_isolated(postgres_admin_url: str) -> None:
    server = postgres.require_server()
    with server.database("a") as first, server.database("b") as second:
        assert first != second
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        with psycopg.connect(second) as conn:
            assert conn.execute("SELECT to_regclass('meta')").fetchone() == (None,)
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")  # no clash
        leftover = psycopg.connect(first)  # a connection a test forgot: the drop still goes through
    try:
        with psycopg.connect(postgres_admin_url) as admin:
            names = {r[0] for r in admin.execute("SELECT datname FROM pg_database").fetchall()}
        assert not {first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]} & names, "dropped afterwards"
    finally:
        leftover.close()


def test_the_server_is_private_to_this_machine_and_runs_unprivileged(postgres_admin_url: str) -> None:
    server = postgres.require_server()
    with psycopg.connect(postgres_admin_url) as conn:
        names = ["listen_addresses", "fsync", "unix_socket_directories"]
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [names]).fetchall())
        owner = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [postgres.ROLE]).fetchone()
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "unix_socket_directories": str(server.socket_dir),
    }
    assert owner == (False,), "the tests' role is not a superuser"
    data = Path(server.data)
    assert stat.S_IMODE(data.stat().st_mode) & 0o077 == 0
    assert data.stat().st_uid != 0 or os.geteuid() != 0, "never run as root"
