"""API keys: created and revoked from the CLI, stored hashed, checked by the server on every request.

A key is ``ss_<id>_<secret>``; only the SHA-256 of the secret is kept (the secret is 32 random
bytes, so a slow password hash would add nothing but latency). :class:`KeyRing` holds the logic
(making, revoking, verifying keys); where the records live is a :class:`KeyStorage`:

- :class:`KeyFile`, ``<data_dir>/keys.json`` beside the embedded store rather than in it, because
  that store admits one process: the CLI must be able to revoke a key while the server runs. The
  server re-reads the file when it changes (a stat per request);
- ``KeyTable`` (:mod:`shopsense.services.coordination`), the ``api_keys`` table of a PostgreSQL store,
  which every replica reads: a key's row is read per request.

Either way a revocation takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Protocol

from shopsense.errors import ConfigError

VERIFIED_KEYS = 1024
"""Valid keys whose secret's hash is remembered (a server has a handful of clients)."""


class Scope(StrEnum):
    """What a key may do; ``marketing`` covers profiles, segments, audiences and campaigns;
    ``admin`` may do everything."""

    EVENTS_WRITE = "events:write"
    RECOMMEND_READ = "recommend:read"
    MARKETING = "marketing"
    ADMIN = "admin"


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: never the secret, only its hash."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    secret_sha256: str
    created_at: str
    revoked_at: str | None = None

    def allows(self, scope: Scope) -> bool:
        return self.revoked_at is None and (scope.value in self.scopes or Scope.ADMIN.value in self.scopes)

    def public(self) -> dict[str, object]:
        """What ``shopsense keys list`` shows."""
        return {k: v for k, v in asdict(self).items() if k != "secret_sha256"}


class KeyStorage(Protocol):
    """Where key records live; :class:`KeyRing` holds the logic over it."""

    blocking: ClassVar[bool]
    """Whether :meth:`find` waits on a database round trip (the API then runs it off the event loop)."""

    def find(self, key_id: str) -> KeyRecord | None:
        """The key's record as it is now: called on every request, so a revocation holds at the next one."""
        ...

    def records(self) -> list[KeyRecord]: ...

    def add(self, record: KeyRecord) -> None: ...

    def revoke(self, key_id: str, at: str) -> KeyRecord | None:
        """Mark the key revoked at ``at``; its new record, None for an unknown key."""
        ...


class KeyRing:
    """API keys over a storage: a :class:`KeyStorage`, or the path of a key file (:class:`KeyFile`)."""

    def __init__(self, storage: KeyStorage | Path) -> None:
        self.storage = KeyFile(storage) if isinstance(storage, Path) else storage
        self._digests: dict[str, tuple[str, str]] = {}
        """Keys verified before -> (key id, secret's hash): a client sends the same key on every request,
        and hashing it each time was a few percent of a small request. Never trusted alone: the
        record is looked up and compared every time."""

    @property
    def blocking(self) -> bool:
        """Whether :meth:`verify` waits on a database round trip."""
        return self.storage.blocking

    def create(self, name: str, scopes: list[str]) -> tuple[str, KeyRecord]:
        """Make a key; returns the full key (shown once, never stored) and its record."""
        unknown = sorted(set(scopes) - {s.value for s in Scope})
        if unknown or not scopes:
            known = ", ".join(s.value for s in Scope)
            raise ConfigError(f"scopes {unknown or '(none)'} are not valid: choose from {known}")
        if not name.strip():
            raise ConfigError("a key needs a name (who or what uses it)")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = KeyRecord(key_id, name.strip(), tuple(sorted(set(scopes))), _digest(secret), _now())
        self.storage.add(record)
        return f"ss_{key_id}_{secret}", record

    def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (kept, so its use can still be audited)."""
        record = self.storage.revoke(key_id, _now())
        if record is None:
            raise ConfigError(f"no API key with id {key_id!r} (see `shopsense keys list`)")
        return record

    def list(self) -> list[KeyRecord]:
        return sorted(self.storage.records(), key=lambda r: r.created_at)

    def verify(self, presented: str) -> KeyRecord | None:
        """The record of a well-formed, known, unrevoked key; None otherwise. The secret's hash is
        compared in constant time with the stored one, read from the storage on every call."""
        known = self._digests.get(presented)
        if known is None:
            parts = presented.split("_", 2)
            if len(parts) != 3 or parts[0] != "ss":
                return None
            known = parts[1], _digest(parts[2])
        key_id, digest = known
        record = self.storage.find(key_id)
        if record is None or record.revoked_at is not None or not hmac.compare_digest(record.secret_sha256, digest):
            return None
        if len(self._digests) >= VERIFIED_KEYS:
            self._digests.clear()
        self._digests[presented] = known
        return record


@dataclass
class KeyFile:
    """The key file, cached in memory and re-read when its modification time changes."""

    blocking: ClassVar[bool] = False
    path: Path
    _cached: dict[str, KeyRecord] = field(default_factory=dict)
    _stamp: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, key_id: str) -> KeyRecord | None:
        return self._current().get(key_id)

    def records(self) -> list[KeyRecord]:
        with self._lock:
            return list(self._read().values())

    def add(self, record: KeyRecord) -> None:
        with self._lock:
            records = self._read()
            records[record.key_id] = record
            self._write(records)

    def revoke(self, key_id: str, at: str) -> KeyRecord | None:
        with self._lock:
            records = self._read()
            if key_id not in records:
                return None
            records[key_id] = KeyRecord(**{**asdict(records[key_id]), "revoked_at": at})
            self._write(records)
            return records[key_id]

    def _current(self) -> dict[str, KeyRecord]:
        """The file's records, read again when the file changed: a stat per request, so a revocation
        holds from the next request."""
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return {}
        if stamp != self._stamp:
            with self._lock:
                self._cached, self._stamp = self._read(), stamp
        return self._cached

    def _read(self) -> dict[str, KeyRecord]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {r["key_id"]: KeyRecord(**{**r, "scopes": tuple(r["scopes"])}) for r in raw["keys"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path} is not a shopsense key file: {exc}") from exc

    def _write(self, records: dict[str, KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # hashes only, still private
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"keys": [asdict(r) for r in records.values()]}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(self.path)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
