"""Versioned schema migrations of the PostgreSQL store, one SQL file per version.

A database shared by several processes cannot be changed behind their backs, so the schema moves
forward only when asked: a fresh database gets every migration when first opened, but a database
at an older version is refused until ``shopsense migrate`` (or ``shopsense init``) applies the
missing ones. Each file is named ``NNNN_what.sql``; its number is the schema version it leads to,
and the pending ones run in one transaction with the version they reach, so a failed migration
leaves the database as it was. Files are never edited once released: a change is a new file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    """One step of the schema: the version it reaches, a name saying what it adds, its SQL."""

    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with this shopsense, oldest first (versions 1, 2, … without gaps)."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"shopsense's migrations are numbered {versions}: expected 1, 2, … without gaps")
    return tuple(found)


def latest() -> int:
    """The schema version this shopsense reads and writes."""
    return migrations()[-1].version


def pending(stored: int) -> tuple[Migration, ...]:
    """The migrations a database at version ``stored`` still needs (0: a fresh database)."""
    return tuple(m for m in migrations() if m.version > stored)
