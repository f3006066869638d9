"""A store's journal: acknowledged events, synced to disk, that are not yet written into the store.

A commit to the embedded database costs several milliseconds, most of it spent handing the GIL
back and forth with the server's event loop. A thousand clients each posting one event would
wait on those commits. The server's writer instead appends each group of accepted events to this
file, syncs it (about 0.2 ms) and only then acknowledges them. Later it seals the file (new
records go to a fresh one), writes the sealed records into the store in one transaction and
deletes the sealed file. Opening the store replays whatever a
crash left in the journal, so an acknowledged event is never lost and every command (import,
train, export) sees it.

Replaying is safe however often it happens: events carry idempotency keys, and the store skips
those it holds already. A record cut short by a crash was never acknowledged (the reply waits for
the sync), so it is dropped with a warning. A damaged record before the last is an error: the
file is left as it is for the user to inspect.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopsense.durable import sync
from shopsense.errors import StoreError
from shopsense.store.base import Store, WriteResult

logger = logging.getLogger(__name__)

_MAGIC = b"SSJ1"
_HEADER = struct.Struct("<4sII")
"""Each record: magic, payload length, CRC-32 of the payload; the payload is an Arrow IPC stream."""


class Journal:
    """The append side of a journal, for the store's only writer: a live file taking new records,
    and sealed files (``<path>.<n>``) whose records are being written into the store."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    @property
    def size(self) -> int:
        """Bytes in the live file."""
        return self._size

    def append(self, events: pa.Table) -> None:
        """Write ``events`` as one record and sync it: once this returns, a crash cannot lose them.

        A failed write (a full disk) is cut off again, so the journal never holds a partial record
        followed by whole ones.
        """
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, events.schema) as stream:
            stream.write_table(events)
        payload = sink.getvalue().to_pybytes()
        record = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write to {self.path}: {written} of {len(record)} bytes")
            os.fdatasync(self._fd)
        except OSError:
            os.ftruncate(self._fd, self._size)
            raise
        self._size += len(record)

    def seal(self) -> Path:
        """Close the live file under the next sealed name and start a new one; returns the sealed file.

        The caller writes the sealed records into the store while new ones go on arriving, then
        removes it. Callers serialise ``seal`` with ``append``.
        """
        earlier = segments(self.path)[:-1]
        sealed = self.path.with_name(f"{self.path.name}.{int(earlier[-1].suffix[1:]) + 1 if earlier else 1}")
        os.rename(self.path, sealed)  # the open descriptor follows the file: a failure here changes nothing
        fresh = self._open()
        os.close(self._fd)
        self._fd, self._size = fresh, 0
        sync(self.path.parent)
        return sealed

    def close(self) -> None:
        """Close the live file (what the journal holds stays for the next replay)."""
        os.close(self._fd)


def segments(path: Path) -> list[Path]:
    """The journal's files, oldest first: the sealed ones in order, then the live one (if there)."""
    sealed = [p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()]
    return sorted(sealed, key=lambda p: int(p.suffix[1:])) + ([path] if path.exists() else [])


def remove(files: list[Path]) -> None:
    """Delete journal files whose records are all in the store, durably: a file that came back after a
    power cut would bring back events erased since."""
    for file in files:
        file.unlink(missing_ok=True)
    if files:
        sync(files[0].parent)


def read(path: Path) -> list[pa.Table]:
    """The event tables in one journal file, oldest first, without a record cut short at the end.

    Raises:
        StoreError: a record before the last one is damaged.
    """
    data = path.read_bytes() if path.exists() else b""
    tables, at = [], 0
    while at < len(data):
        whole = at + _HEADER.size <= len(data)
        magic, length, crc = _HEADER.unpack_from(data, at) if whole else (b"", 0, 0)
        payload = data[at + _HEADER.size : at + _HEADER.size + length]
        end = at + _HEADER.size + length
        if not whole or magic != _MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
            if end >= len(data):  # the last record, cut short by a crash before it was acknowledged
                logger.warning("%s: dropped %d bytes at its end, never acknowledged", path, len(data) - at)
                break
            raise StoreError(f"{path}: record at byte {at} is damaged; move the file aside to open the store")
        tables.append(pa.ipc.open_stream(payload).read_all())
        at = end
    return tables


def replay(store: Store, path: Path) -> WriteResult | None:
    """Write every journaled event into ``store`` (those it holds already are skipped), then delete
    the journal's files. Returns what the write did, or None when the journal held nothing."""
    files = segments(path)
    tables = [table for file in files for table in read(file)]
    result = None
    if tables:
        events = first_of_each_key(pa.concat_tables(tables))
        users, items = pc.unique(events.column("user_id")), pc.unique(events.column("item_id"))
        result = store.append_events(events, users, items, "api journal")
        logger.info("%s: replayed %d events (%d already stored)", path, result.received, result.already_stored)
    remove(files)  # even one holding only a cut-off record: later records must not follow it
    return result


def first_of_each_key(table: pa.Table) -> pa.Table:
    """Keep the first copy of each event key: two requests (or two journal records) may carry the same event."""
    high = table.column("key_hi").to_numpy()
    if len(np.unique(high)) == len(high):  # the usual case, told 20x faster than by comparing whole keys
        return table
    keys = np.stack([high, table.column("key_lo").to_numpy()], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    return table if len(first) == table.num_rows else table.take(pa.array(np.sort(first)))
