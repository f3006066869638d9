"""Several API replicas over one PostgreSQL store: what they must agree on lives in the database.

- ``api_keys`` (:class:`KeyTable`): each request reads its key's row (one primary-key lookup), so a
  key created or revoked anywhere (another replica, the CLI) holds on every replica at its next request;
- ``bundle_pins`` (:class:`PinTable`): promotions, pins and rollbacks, newest last; every replica
  serves the version the newest row names;
- ``replicas`` (:class:`ReplicaTable`): a heartbeat row per running server, with the bundle it
  serves; the number alive divides each key's rate limit among them.

:class:`Coordinator` is a server's one background loop over these: follow the bundle decision,
heartbeat, share of the rate limit, once a second. With the embedded store (one process) the same
loop runs over :class:`SoloReplica` (always one replica) and the file pins, and reloads every
``serve.reload_seconds`` as before.

The tables are reached with short autocommit statements on connections borrowed from the process's
pool (:mod:`shopsense.store.pool`); a driver error leaves as the store's
(:func:`~shopsense.store.postgres.driver_error`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import psycopg

from shopsense.services.bundles import Pin, PinAction
from shopsense.services.keys import KeyRecord
from shopsense.store.pool import connection_pool
from shopsense.store.postgres import driver_error

if TYPE_CHECKING:
    from shopsense.services.serving import ServingService

log = logging.getLogger("shopsense.serve")

BEAT_S = 1.0
"""How often a server refreshes its heartbeat and checks which bundle to serve."""
ALIVE_S = 3.0
"""A replica not seen for this long no longer counts (three missed beats): a crashed one stops
taking a share of the rate limit within seconds, a briefly slow one keeps its share."""


class _Database:
    """Short statements on the process's pooled connections to one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool = connection_pool(url)

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            with self.pool.connection() as conn:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:
            raise driver_error(self.url, exc) from exc


# -- keys ---------------------------------------------------------------------------------------

_KEY_COLUMNS = "key_id, name, scopes, secret_sha256, created_at, revoked_at"


class KeyTable:
    """:class:`~shopsense.services.keys.KeyStorage` in the ``api_keys`` table."""

    blocking: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        self._db = _Database(url)

    def find(self, key_id: str) -> KeyRecord | None:
        rows = self._db.rows(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = %s", [key_id])
        return _key(rows[0]) if rows else None

    def records(self) -> list[KeyRecord]:
        return [_key(row) for row in self._db.rows(f"SELECT {_KEY_COLUMNS} FROM api_keys")]

    def add(self, record: KeyRecord) -> None:
        self._db.rows(
            f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",
            [record.key_id, record.name, list(record.scopes), record.secret_sha256, record.created_at, None],
        )

    def revoke(self, key_id: str, at: str) -> KeyRecord | None:
        rows = self._db.rows(
            f"UPDATE api_keys SET revoked_at = %s WHERE key_id = %s RETURNING {_KEY_COLUMNS}", [at, key_id]
        )
        return _key(rows[0]) if rows else None


def _key(row: tuple[Any, ...]) -> KeyRecord:
    key_id, name, scopes, digest, created, revoked = row
    return KeyRecord(key_id, name, tuple(scopes), digest, _iso(created), None if revoked is None else _iso(revoked))


def _iso(moment: datetime) -> str:
    """As the key file writes times (UTC, whole seconds), so both storages list keys alike."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


# -- bundle pins --------------------------------------------------------------------------------


class PinTable:
    """:class:`~shopsense.services.bundles.PinLog` in the ``bundle_pins`` table (the log is the history)."""

    def __init__(self, url: str) -> None:
        self._db = _Database(url)

    def newest(self, pipeline: str) -> Pin | None:
        rows = self._db.rows(
            "SELECT version, action FROM bundle_pins WHERE pipeline = %s ORDER BY id DESC LIMIT 1", [pipeline]
        )
        return Pin(rows[0][0], PinAction(rows[0][1])) if rows else None

    def record(self, pipeline: str, version: str | None, action: PinAction) -> None:
        self._db.rows(
            "INSERT INTO bundle_pins (pipeline, version, action) VALUES (%s, %s, %s)", [pipeline, version, action.value]
        )


# -- replicas -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaInfo:
    """One running server, as ``GET /v1/admin/replicas`` shows it."""

    replica_id: str
    host: str
    pid: int
    started_at: str
    seen_at: str
    bundle_version: str | None


class Replicas(Protocol):
    """The servers sharing a store, as one of them sees them."""

    shared: ClassVar[bool]
    """Whether other processes may serve the same store (then bundle decisions are followed every beat)."""
    replica_id: str

    def beat(self, bundle_version: str | None) -> int:
        """Say this replica is alive and serves ``bundle_version``; the replicas alive, this one included."""
        ...

    def alive(self) -> list[ReplicaInfo]:
        """The replicas alive, oldest first."""
        ...

    def leave(self) -> None:
        """This replica stops: the others stop counting it at their next beat."""
        ...


def _replica_id() -> str:
    """Host, process and a random part: two apps in one process (tests) are two replicas."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SoloReplica:
    """The embedded store's one server: always alone, nothing stored."""

    shared: ClassVar[bool] = False

    def __init__(self) -> None:
        now = _iso(datetime.now(UTC))
        self.replica_id = _replica_id()
        self._info = ReplicaInfo(self.replica_id, socket.gethostname(), os.getpid(), now, now, None)

    def beat(self, bundle_version: str | None) -> int:
        self._info = replace(self._info, seen_at=_iso(datetime.now(UTC)), bundle_version=bundle_version)
        return 1

    def alive(self) -> list[ReplicaInfo]:
        return [self._info]

    def leave(self) -> None:
        """Nothing to tell: no other replica exists."""


class ReplicaTable:
    """Heartbeat rows in the ``replicas`` table. Times are the database's (``now()``), so replicas on
    hosts whose clocks disagree still agree on who is alive."""

    shared: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        self._db = _Database(url)
        self.replica_id = _replica_id()

    def beat(self, bundle_version: str | None) -> int:
        self._db.rows(
            "INSERT INTO replicas (replica_id, host, pid, started_at, seen_at, bundle_version)"
            " VALUES (%s, %s, %s, now(), now(), %s)"
            " ON CONFLICT (replica_id) DO UPDATE SET seen_at = now(), bundle_version = EXCLUDED.bundle_version",
            [self.replica_id, socket.gethostname(), os.getpid(), bundle_version],
        )
        rows = self._db.rows(
            "SELECT count(*) FROM replicas WHERE seen_at > now() - make_interval(secs => %s)", [ALIVE_S]
        )
        return max(1, int(rows[0][0]))

    def alive(self) -> list[ReplicaInfo]:
        rows = self._db.rows(
            "SELECT replica_id, host, pid, started_at, seen_at, bundle_version FROM replicas"
            " WHERE seen_at > now() - make_interval(secs => %s) ORDER BY started_at, replica_id",
            [ALIVE_S],
        )
        return [ReplicaInfo(r[0], r[1], r[2], _iso(r[3]), _iso(r[4]), r[5]) for r in rows]

    def leave(self) -> None:
        self._db.rows("DELETE FROM replicas WHERE replica_id = %s", [self.replica_id])


# -- the loop -----------------------------------------------------------------------------------


class Coordinator:
    """A server's background loop: serve the bundle decided, beat, take this replica's rate-limit share.

    ``share`` is told the number of replicas alive after every beat (the API's rate limiter).
    With a shared store the served bundle follows the newest decision within a beat; alone, the
    newest or pinned bundle is looked for every ``serve.reload_seconds`` (0: never), as before.
    """

    def __init__(self, service: ServingService, replicas: Replicas, share: Callable[[int], None]) -> None:
        self.service, self.replicas, self.share = service, replicas, share
        self._reload_every = service.settings.serve.reload_seconds
        self._reloaded = time.monotonic()

    def tick(self) -> None:
        """One round: heartbeat first (a bundle load may take seconds, and a replica silent for
        :data:`ALIVE_S` stops counting, raising the others' rate-limit share), then follow the bundle decision."""
        served = self.service.served
        self.share(self.replicas.beat(served.info.version if served else None))
        self._follow_bundles()

    def run(self, stop: threading.Event) -> None:
        """Tick every :data:`BEAT_S` until ``stop``; a failed round (the database away) is logged and
        the next one tried, the last share and bundle kept meanwhile."""
        while not stop.wait(BEAT_S):
            try:
                self.tick()
            except Exception:  # the loop must outlive any one round, or replicas silently stop agreeing
                log.exception("replica coordination round failed; retrying in %.0fs", BEAT_S)

    def _follow_bundles(self) -> None:
        service = self.service
        if self.replicas.shared:
            served = service.served
            if service.bundles.chosen(service.settings.serve.pipeline) != (served.info.version if served else None):
                service.reload()
        elif 0 < self._reload_every <= time.monotonic() - self._reloaded:
            self._reloaded = time.monotonic()
            service.reload()
