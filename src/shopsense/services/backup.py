"""Backups: every table a store holds, as Parquet files in one folder with a manifest of counts and checksums.

Why a folder of Parquet files plus ``manifest.json`` rather than a copy of the embedded DuckDB file:

* **Damage is found, and named, before anything is written.** The manifest lists each file's rows, size
  and SHA-256; ``restore`` checks every one first, so a truncated copy or a flipped bit is refused as
  "events.parquet: its SHA-256 is not the manifest's", never half-restored. A database file can only be
  opened and hoped for.
* **It outlives the engine.** Parquet is read by any version of DuckDB, by pandas, by Spark; a DuckDB file
  is readable only by DuckDB versions that know its storage format. A backup is kept for years.
* **One path in and out.** Items, users and events are written by ``Store.export`` and read back through
  the same :class:`~shopsense.ingest.importer.Importer` as ``shopsense import``: the importer derives each
  event's key from its content as it did the first time (identical lines numbered in order), so keys and
  repeated lines come back the same, and restoring twice adds nothing. ``shopsense migrate-store`` is the
  same dump and load through a temporary folder (:meth:`~shopsense.services.data.DataService.copy_to`).
* **Complete or absent.** The files are written into a hidden sibling folder, flushed, the manifest last,
  then the folder is renamed into place: a crash leaves a ``.NAME.partial-…`` folder without a manifest,
  which ``restore`` refuses, never a backup that looks whole.

What is in it: items, users, events, impressions, campaigns, their assignments, saved segments, the built profiles
and the erasure tombstones (hashes of erased ids: a restore keeps them, and leaves out every row of those users).
What is not: API keys (credentials do not travel in a file meant to be moved around; an embedded store keeps
them in ``<data_dir>/keys.json``, a PostgreSQL store in ``api_keys``, and a restore leaves the target's keys
as they are), model bundles (files in the data directory: copy it, or train again), the job history and the
import log (a restore logs its own imports).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shopsense import __version__
from shopsense.domain import RecordKind
from shopsense.durable import sync, write_synced
from shopsense.errors import ConfigError, InputError
from shopsense.ingest.importer import Importer, Progress
from shopsense.ingest.mapping import load_mapping
from shopsense.settings import Settings
from shopsense.store import Store
from shopsense.store.base import erased_since

FORMAT = "shopsense-backup"
VERSION = 1
MANIFEST = "manifest.json"
IMPORTED = (RecordKind.ITEMS, RecordKind.USERS, RecordKind.EVENTS)
"""Tables written by ``Store.export`` and read back through the importer, in the order they must go in."""
TABLES = (
    *(kind.value for kind in IMPORTED),
    *("impressions", "campaigns", "assignments", "erasures", "segments", "profiles"),
)
OPTIONAL = ("segments", "profiles")
REQUIRED = tuple(t for t in TABLES if t not in OPTIONAL)
"""Every backup has these; ``segments`` and ``profiles`` only where the store had saved or built them."""
_TS = pa.timestamp("us", tz="UTC")
_ERASURES = pa.schema([("user_sha256", pa.string()), ("erased_at", _TS)])
_CAMPAIGNS = pa.schema([("name", pa.string()), ("config", pa.string())])
_SEGMENTS = pa.schema([("name", pa.string()), ("expression", pa.string())])
_ASSIGNMENTS = pa.schema(
    [("campaign", pa.string()), ("user_id", pa.string()), ("variant", pa.string()), ("assigned_at", _TS)]
)


@dataclass(frozen=True)
class BackedUp:
    """A backup written: where, rows per table (``segments`` and ``profiles`` absent when none were saved or built),
    bytes in all."""

    path: Path
    rows: dict[str, int]
    bytes: int


def dump(store: Store, folder: Path) -> tuple[dict[str, int], datetime]:
    """Write every table of ``store`` into ``folder`` as ``<table>.parquet``, all read from one snapshot (servers
    may write meanwhile); rows written per table, and when the snapshot was taken.

    ``segments.parquet`` and ``profiles.parquet`` are written only when the store holds saved segments and built
    profiles.
    """
    with store.snapshot():
        taken = datetime.now(UTC)
        return _dump(store, folder), taken


def _dump(store: Store, folder: Path) -> dict[str, int]:
    rows = {kind.value: store.export(kind, folder / f"{kind.value}.parquet") for kind in IMPORTED}
    impressions = store.scan_impressions()
    pq.write_table(impressions, folder / "impressions.parquet")
    rows["impressions"] = impressions.num_rows
    configs = store.campaigns()
    campaigns = pa.table({"name": list(configs), "config": list(configs.values())}, schema=_CAMPAIGNS)
    pq.write_table(campaigns, folder / "campaigns.parquet")
    rows["campaigns"] = campaigns.num_rows
    assigned = [_with_campaign(name, store.assignments(name)) for name in configs]
    assignments = pa.concat_tables(assigned) if assigned else _ASSIGNMENTS.empty_table()
    pq.write_table(assignments, folder / "assignments.parquet")
    rows["assignments"] = assignments.num_rows
    tombstones = sorted(store.tombstones().items())
    erasures = pa.Table.from_pylist([{"user_sha256": h, "erased_at": at} for h, at in tombstones], schema=_ERASURES)
    pq.write_table(erasures, folder / "erasures.parquet")
    rows["erasures"] = erasures.num_rows
    saved = store.saved_segments()
    if saved:
        segments = pa.table({"name": list(saved), "expression": list(saved.values())}, schema=_SEGMENTS)
        pq.write_table(segments, folder / "segments.parquet")
        rows["segments"] = segments.num_rows
    profiles = store.load_profiles()
    if profiles is not None:
        pq.write_table(profiles, folder / "profiles.parquet")
        rows["profiles"] = profiles.num_rows
    return rows


def _with_campaign(name: str, rows: pa.Table) -> pa.Table:
    named = rows.select(["user_id", "variant", "assigned_at"]).add_column(
        0, "campaign", pa.array([name] * rows.num_rows, pa.string())
    )
    return named.cast(_ASSIGNMENTS)


@dataclass(frozen=True)
class Loaded:
    """Rows a load added per table, and the rows it left out because they name a user erased in the store
    (after the backup was written, or by a tombstone the backup carried)."""

    written: dict[str, int]
    skipped: int


def load(
    folder: Path, store: Store, settings: Settings, written_at: datetime, progress: Progress | None = None
) -> Loaded:
    """Write the tables :func:`dump` left in ``folder`` into ``store``, in one transaction; rows added per table.

    Items, users and events go through the importer (events already stored are skipped by their keys; items
    and users already there are merged field by field and not counted), impressions through
    ``merge_impressions`` (rows held already are not added again); a campaign is saved, and the store's
    profiles replaced, only where they differ from the folder's; a user keeps a variant the store had
    assigned already. So loading one folder twice writes nothing the second time.

    Erasure lasts through a restore: the backup's tombstones are added to the store's first, and no row of a
    user erased after ``written_at`` (when the backup's snapshot was taken) comes in (users, events,
    impressions, assignments, profiles: each by ``user_id``), so restoring a backup older than an erasure
    does not bring the user back; a user erased before it and come back since keeps the new rows.
    """
    importer = Importer(store, settings, progress=progress)
    written: dict[str, int] = {}
    with store.transaction(), tempfile.TemporaryDirectory(prefix="shopsense-restore-") as scratch:
        erasures = pq.read_table(folder / "erasures.parquet").to_pylist()
        written["erasures"] = store.add_tombstones({row["user_sha256"]: row["erased_at"] for row in erasures})
        erased = _Erased(erased_since(store.tombstones(), written_at))
        for kind in IMPORTED:
            path = folder / f"{kind.value}.parquet"
            written[kind.value] = 0
            if pq.read_metadata(path).num_rows:  # an empty file is no input to import
                path = erased.spare(path, Path(scratch))
                report = importer.import_file(path, load_mapping(None, kind, {}))
                added = {RecordKind.ITEMS: report.new_items, RecordKind.USERS: report.new_users}
                written[kind.value] = added.get(kind, report.rows_written)
        impressions = erased.without(pq.read_table(folder / "impressions.parquet"))
        written["impressions"] = store.merge_impressions(impressions)
        written |= _load_marketing(folder, store, erased)
    return Loaded(written, erased.skipped)


class _Erased:
    """The store's tombstones, applied to the tables a load brings in; counts the rows it leaves out."""

    def __init__(self, hashes: set[str]) -> None:
        self.hashes = pa.table({"h": pa.array(sorted(hashes), pa.string())})
        self.skipped = 0

    def without(self, table: pa.Table) -> pa.Table:
        """``table`` without the rows whose ``user_id`` has a tombstone (hashed by DuckDB, in one pass)."""
        if not self.hashes.num_rows or "user_id" not in table.column_names or not table.num_rows:
            return table
        ids = pa.table({"user_id": table.column("user_id")})
        with duckdb.connect() as con:
            con.register("ids", ids)
            con.register("erased", self.hashes)
            keep = con.sql(
                "SELECT user_id IS NULL OR sha256(user_id) NOT IN (SELECT h FROM erased) AS keep FROM ids"
            ).to_arrow_table()["keep"]
        kept = table.filter(keep)
        self.skipped += table.num_rows - kept.num_rows
        return kept

    def spare(self, path: Path, scratch: Path) -> Path:
        """The Parquet file at ``path``, or a copy in ``scratch`` without the erased users' rows if it has any."""
        if not self.hashes.num_rows:
            return path
        table = pq.read_table(path)
        kept = self.without(table)
        if kept.num_rows == table.num_rows:
            return path
        spared = scratch / path.name
        pq.write_table(kept, spared)
        return spared


def _load_marketing(folder: Path, store: Store, erased: _Erased) -> dict[str, int]:
    written = {"campaigns": 0, "assignments": 0}
    stored = {name: json.loads(config) for name, config in store.campaigns().items()}
    assignments = erased.without(pq.read_table(folder / "assignments.parquet"))
    for campaign in pq.read_table(folder / "campaigns.parquet").to_pylist():
        name, config = campaign["name"], campaign["config"]
        if stored.get(name) != json.loads(config):
            store.save_campaign(name, config)
            written["campaigns"] += 1
        mine = assignments.filter(pc.equal(assignments["campaign"], name)).drop_columns("campaign")
        written["assignments"] += store.add_assignments(name, mine)
    if (folder / "segments.parquet").exists():
        saved = store.saved_segments()
        changed = [
            s for s in pq.read_table(folder / "segments.parquet").to_pylist() if saved.get(s["name"]) != s["expression"]
        ]
        for segment in changed:
            store.save_segment(segment["name"], segment["expression"])
        written["segments"] = len(changed)
    if (folder / "profiles.parquet").exists():
        profiles = erased.without(pq.read_table(folder / "profiles.parquet"))
        current = store.load_profiles()
        written["profiles"] = 0
        if current is None or not _same_rows(current, profiles):
            written["profiles"] = store.save_profiles(profiles)
    return written


def _same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Whether two tables hold the same schema and values, NaN equal to NaN (``Table.equals`` says a table with
    a NaN differs from itself): compared as the Parquet bytes they write."""
    if a.equals(b):
        return True
    if not a.schema.remove_metadata().equals(b.schema.remove_metadata()) or a.num_rows != b.num_rows:
        return False
    return _parquet_bytes(a) == _parquet_bytes(b)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(None).combine_chunks(), sink)
    return bytes(sink.getvalue().to_pybytes())


def write_backup(store: Store, path: Path, *, source: str, force: bool = False) -> BackedUp:
    """Write a backup of ``store`` to the folder ``path``, whole or not at all.

    Args:
        store: the store to back up.
        path: the backup folder to create; its parent is created if needed.
        source: the store's URL as it may be printed, kept in the manifest.
        force: replace an existing backup at ``path`` (never anything that is not a backup).

    Raises:
        ConfigError: ``path`` exists (and ``force`` was not given, or it is not a backup).
    """
    path = path.absolute()
    if path.exists() or path.is_symlink():
        _check_replaceable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        rows, taken = dump(store, partial)
        tables = {table: _describe(partial, table, n) for table, n in rows.items()}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": taken.isoformat(),
            "shopsense": __version__,
            "source": source,
            "tables": tables,
        }
        write_synced(partial / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))
        sync(partial)
        _put_in_place(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BackedUp(path, rows, sum(t["bytes"] for t in tables.values()))


def _check_replaceable(path: Path, force: bool) -> None:
    if not force:
        raise ConfigError(f"{path} exists: name a new folder, or pass --force to replace the backup there")
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    try:
        is_backup = json.loads((path / MANIFEST).read_text("utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        is_backup = False
    if not is_backup or path.is_symlink():
        raise ConfigError(f"{path} exists and is not a shopsense backup: not replaced, even with --force")


def _describe(folder: Path, table: str, rows: int) -> dict[str, Any]:
    file = folder / f"{table}.parquet"
    sync(file)
    return {"file": file.name, "rows": rows, "bytes": file.stat().st_size, "sha256": _sha256(file)}


def _sha256(file: Path) -> str:
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _put_in_place(partial: Path, path: Path) -> None:
    """Rename the finished folder to ``path``; an old backup there is moved aside first, removed after."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.replaced-", dir=path.parent)) / path.name
        path.rename(old)
    partial.rename(path)
    sync(path.parent)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


def verify(path: Path) -> dict[str, Any]:
    """Check a backup folder before anything is read from it into a store; its manifest.

    Every table the manifest lists must be there with its size, SHA-256 and row count.

    Raises:
        InputError: naming the file and what is wrong with it.
    """
    if not path.is_dir():
        raise InputError(str(path), "no backup folder here (`shopsense backup PATH` writes one)")
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise InputError(
            str(manifest_file), "missing: not a shopsense backup, or one whose writing did not finish; nothing restored"
        )
    try:
        manifest = json.loads(manifest_file.read_text("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(
            str(manifest_file), f"not valid JSON ({exc}): the backup is damaged; nothing restored"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(str(manifest_file), f"not a {FORMAT} manifest; nothing restored")
    if manifest.get("version") != VERSION:
        raise InputError(
            str(manifest_file),
            f"backup format version {manifest.get('version')!r}; this shopsense reads {VERSION}: "
            "restore it with the shopsense that wrote it",
        )
    try:
        written_at = datetime.fromisoformat(manifest.get("created_at", ""))
    except (TypeError, ValueError):
        written_at = None
    if written_at is None or written_at.tzinfo is None:
        raise InputError(str(manifest_file), "no created_at with a time zone: the backup is damaged; nothing restored")
    tables = manifest.get("tables")
    missing = [t for t in REQUIRED if not isinstance(tables, dict) or t not in tables]
    if missing or not isinstance(tables, dict):
        raise InputError(str(manifest_file), f"lists no {', '.join(missing)}: the backup is damaged; nothing restored")
    for table, entry in tables.items():
        _verify_table(path, table, entry)
    return manifest


def _verify_table(folder: Path, table: str, entry: Any) -> None:
    expected = f"{table}.parquet"
    if table not in TABLES or not isinstance(entry, dict) or entry.get("file") != expected:
        raise InputError(str(folder / MANIFEST), f"unexpected entry {table!r}: the backup is damaged; nothing restored")
    file = folder / expected
    if not file.is_file():
        raise InputError(str(file), "missing from the backup; nothing restored")
    size = file.stat().st_size
    if size != entry.get("bytes"):
        raise InputError(
            str(file), f"{size:,} bytes where the manifest says {entry.get('bytes')}: damaged; nothing restored"
        )
    if _sha256(file) != entry.get("sha256"):
        raise InputError(
            str(file), "its SHA-256 is not the manifest's: the file was changed or damaged; nothing restored"
        )
    try:
        rows = pq.read_metadata(file).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise InputError(str(file), f"not a readable Parquet file ({exc}); nothing restored") from exc
    if rows != entry.get("rows"):
        raise InputError(str(file), f"{rows:,} rows where the manifest says {entry.get('rows')}; nothing restored")
