"""API keys: created and revoked from the CLI, stored hashed, checked by the server on every request.

The key file lives beside the store (``<data_dir>/keys.json``) rather than in it because the
embedded store admits one process: the CLI must be able to revoke a key while the server runs.
A key is ``ss_<id>_<secret>``; only the SHA-256 of the secret is kept (the secret is 32 random
bytes, so a slow password hash would add nothing but latency). The server re-reads the file when
it changes, so a revocation takes effect on the next request.
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

from shopsense.errors import ConfigError

VERIFIED_KEYS = 1024
"""Valid keys remembered between reads of the key file (a server has a handful of clients)."""


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


@dataclass
class KeyRing:
    """The key file, cached in memory and re-read when its modification time changes."""

    path: Path
    _loaded: _Loaded = field(default_factory=lambda: _Loaded({}, {}))
    _stamp: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
        with self._lock:
            records = self._read()
            records[key_id] = record
            self._write(records)
        return f"ss_{key_id}_{secret}", record

    def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (kept, so its use can still be audited)."""
        with self._lock:
            records = self._read()
            if key_id not in records:
                raise ConfigError(f"no API key with id {key_id!r} (see `shopsense keys list`)")
            records[key_id] = KeyRecord(**{**asdict(records[key_id]), "revoked_at": _now()})
            self._write(records)
            return records[key_id]

    def list(self) -> list[KeyRecord]:
        with self._lock:
            return sorted(self._read().values(), key=lambda r: r.created_at)

    def verify(self, presented: str) -> KeyRecord | None:
        """The record of a well-formed, known, unrevoked key; None otherwise. The secret's hash is
        compared in constant time; a key already verified against this version of the file is found
        by a dictionary lookup instead (string hashes are randomised per process)."""
        loaded = self._current()
        known = loaded.verified.get(presented)
        if known is not None:
            return known
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != "ss":
            return None
        record = loaded.records.get(parts[1])
        if record is None or record.revoked_at is not None:
            return None
        if not hmac.compare_digest(record.secret_sha256, _digest(parts[2])):
            return None
        if len(loaded.verified) >= VERIFIED_KEYS:
            loaded.verified.clear()
        loaded.verified[presented] = record  # this version's set: a newer file starts an empty one
        return record

    def _current(self) -> _Loaded:
        """The file's records, read again when the file changed: a stat per request, so a revocation
        holds from the next request."""
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return _Loaded({}, {})
        if stamp != self._stamp:
            with self._lock:
                self._loaded, self._stamp = _Loaded(self._read(), {}), stamp
        return self._loaded

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


@dataclass(frozen=True)
class _Loaded:
    """One version of the key file: its records, and the keys presented and found valid against it
    (a client sends the same key on every request; hashing it each time was a few percent of a
    small request). Replaced whole, so a check that started on an older version cannot remember a
    key in the newer one."""

    records: dict[str, KeyRecord]
    verified: dict[str, KeyRecord]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
