"""Rewriting an embedded store's file so that erased rows leave no bytes behind.

DuckDB keeps a deleted row's bytes in the file's blocks (freed, never zeroed) even across CHECKPOINT,
FORCE CHECKPOINT or VACUUM, and rewriting a table inside the file only frees more blocks. Only a fresh
file holds nothing but the live rows, so an erasure marks the store (``meta``: ``compact_pending``) and
the store, as it closes, copies itself table by table into a new file that replaces the old one.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import duckdb

from shopsense.durable import sync
from shopsense.errors import StoreError

COMPACT_MARK = "compact_pending"
"""The ``meta`` key an erasure sets: the file still holds the erased rows' bytes in freed blocks until
:func:`compact_file` rewrites it (at the next close or open)."""
log = logging.getLogger(__name__)


def compact_file(path: Path, con: duckdb.DuckDBPyConnection | None = None) -> None:
    """Rewrite a DuckDB file into a fresh one, table by table, and put it in the old one's place.

    DuckDB keeps a deleted row's bytes in the file's blocks (freed, never zeroed) even across CHECKPOINT
    or VACUUM; only a fresh file holds nothing but the live rows. ``con`` is a connection to the file
    that the caller still holds (a store closing, or one just opened); without it the file is opened
    here. That connection's lock on the file is held until the fresh file has replaced it and the rename
    is synced: another process cannot open the old file in between, commit to it, and lose the commit
    to the rename. The log is folded into the file first (CHECKPOINT), so no log of the old file is
    left beside the new one; the copy is synced before it replaces the original (a crash leaves one
    whole file or the other, and the ``compact_pending`` mark that says to try again). A failed rewrite
    leaves no partial copy behind. The old file's blocks go back to the file system, outside
    shopsense's reach.
    """
    started = time.perf_counter()
    fresh = path.with_name(f"{path.name}.compact")
    leftovers = (fresh, fresh.with_name(f"{fresh.name}.wal"))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    before = path.stat().st_size
    held = con if con is not None else duckdb.connect(str(path))
    replaced = False
    try:
        held.execute("CHECKPOINT")
        if Path(f"{path}.wal").exists():  # the log would be replayed into the fresh file at the next open
            raise StoreError(f"{path}: its write-ahead log could not be folded into the file")
        (name,) = held.execute("SELECT current_database()").fetchone() or ("",)
        held.execute(f"ATTACH '{_sql_path(fresh)}' AS compacted")
        try:
            held.execute(f'COPY FROM DATABASE "{name}" TO compacted')
            held.execute("DELETE FROM compacted.meta WHERE key = ?", [COMPACT_MARK])
        finally:
            held.execute("DETACH compacted")
        if leftovers[1].exists():
            raise StoreError(f"{fresh}: its write-ahead log was not folded in when it was closed")
        sync(fresh)
        os.replace(fresh, path)
        replaced = True
        sync(path.parent)
    finally:
        if not replaced:
            for leftover in leftovers:
                leftover.unlink(missing_ok=True)
        if con is None:
            held.close()  # only now may another process open the file: the fresh one
    log.info(
        "%s rewritten without the erased rows' bytes in %.2f s (%d bytes, %d before)",
        path,
        time.perf_counter() - started,
        path.stat().st_size,
        before,
    )


def compact_or_warn(path: Path, con: duckdb.DuckDBPyConnection | None = None) -> bool:
    """:func:`compact_file`, or a warning: the data is whole either way, and the mark stays for next time.
    Whether the file was rewritten."""
    try:
        compact_file(path, con)
    except (duckdb.Error, OSError, StoreError) as exc:
        log.warning(
            "%s could not be rewritten without erased rows' bytes (tried again at the next open): %s", path, exc
        )
        return False
    return True


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
