"""One PostgreSQL connection pool per database URL and process.

A server holds several store handles at once (the writer thread, the replica feed, jobs, key checks),
each used by one thread at a time. Opening a connection costs a few milliseconds and a PostgreSQL
backend process, so handles borrow connections from one pool per URL instead, and give them back
when they close. Connections come in autocommit mode, in UTC. They are not tested before each loan (a
round trip that doubled the cost of a per-request key check): a connection the database dropped fails
its next statement, the pool discards it when it comes back, and a store handle exchanges it for a
fresh one (``PostgresStore._conn``).

A pool is made only after one direct connection to its database succeeded: a pool retries a failing
connection in the background until its timeout, so a mistyped URL would otherwise surface seconds
later as a bare pool timeout instead of at once in PostgreSQL's own words.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

POOL_MAX = 16
"""Connections one process keeps to one database at most. A server holds about five for its life (writer,
reader, replica feed, a job worker and its bookkeeping); the rest serve per-request key checks, heartbeats
and bundle decisions. N replicas take up to 16·N of the database's ``max_connections`` (100 by default)."""

_pools: dict[str, ConnectionPool[Connection[Any]]] = {}
_lock = threading.Lock()


def _configure(conn: Connection[Any]) -> None:
    conn.autocommit = True
    conn.execute("SET TIME ZONE 'UTC'")


def connection_pool(url: str, connect_timeout: int = 10) -> ConnectionPool[Connection[Any]]:
    """The process's pool for ``url``, opened on first use after one trial connection.

    Raises:
        psycopg.Error: the trial connection failed (no pool is kept for the URL).
    """
    with _lock:
        pool = _pools.get(url)
        if pool is None:
            Connection.connect(url, connect_timeout=connect_timeout, application_name="shopsense").close()
            pool = ConnectionPool(
                url,
                min_size=0,
                max_size=POOL_MAX,
                kwargs={"autocommit": True, "connect_timeout": connect_timeout, "application_name": "shopsense"},
                configure=_configure,
                timeout=connect_timeout,
                open=True,
            )
            _pools[url] = pool
        return pool


def discard_pool(url: str) -> None:
    """Close the pool of ``url`` (its idle connections end now, lent ones when given back).

    For a database this shopsense refuses (a newer schema): nothing should stay connected to it.
    """
    with _lock:
        pool = _pools.pop(url, None)
    if pool is not None:
        pool.close()


def close_pools() -> None:
    """Close every pool (their idle connections end at once); later calls open new ones."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)
