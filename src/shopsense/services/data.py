"""DataService: the one facade the CLI (and later the API and dashboard) call for data work."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError
from shopsense.ingest.adapters import ADAPTERS
from shopsense.ingest.importer import Duplicates, Importer, ImportReport, OnError, Progress
from shopsense.ingest.mapping import Mapping
from shopsense.ingest.source import Format, export_format
from shopsense.services.backup import BackedUp, dump, load, verify, write_backup
from shopsense.settings import Settings
from shopsense.store import Store, StoreSummary, open_store
from shopsense.store.base import shown_url

SHARED_DATASETS = Path("../shared/datasets")


@dataclass(frozen=True)
class Migrated:
    """A store brought up to date: its URL as it may be printed, and the migrations applied now."""

    url: str
    applied: list[str]


@dataclass(frozen=True)
class Copied:
    """A store copied into another, or a backup restored into one: rows written there per table (0 for rows it
    held already), and its summary."""

    url: str
    written: dict[str, int]
    summary: StoreSummary
    skipped: int = 0
    """Rows left out because they name a user erased in the target (see :func:`~shopsense.services.backup.load`)."""


class DataService:
    """Opens the configured store on first use and runs imports, stats and exports on it.

    ``opener`` opens the store when it is first needed; by default with the ingest settings (memory
    limit, threads) that batch work wants. :class:`shopsense.services.shop.Shop` passes the server's
    options instead when it serves HTTP, so that one process opens its store once, one way.
    """

    def __init__(
        self, settings: Settings, opener: Callable[[], Store] | None = None, *, read_only: bool = False
    ) -> None:
        """``read_only``: open the embedded store to read only, beside other readers (see
        :class:`~shopsense.store.duckdb.DuckDBStore`); writes through this service then fail."""
        self.settings = settings
        self.read_only = read_only
        self._opener = opener or self._open_for_batch
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The configured store, opened (and its schema created) on first use."""
        if self._store is None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            self._store = self._opener()
        return self._store

    @property
    def is_open(self) -> bool:
        """Whether the store has been opened (and not closed since)."""
        return self._store is not None

    def _open_for_batch(self, *, migrate: bool = False) -> Store:
        ingest = self.settings.ingest
        only_read = {"read_only": True} if self.read_only and not migrate else {}
        return open_store(
            self.settings.resolved_store_url,
            memory_limit=ingest.memory_limit,
            threads=ingest.threads,
            migrate=migrate,
            **only_read,
        )

    @property
    def url(self) -> str:
        """The configured store's URL as it may be printed (no password)."""
        return shown_url(self.settings.resolved_store_url)

    def init(self) -> Migrated:
        """Create the data directory and the store, or bring an existing store's schema up to date."""
        return self.migrate()

    def migrate(self) -> Migrated:
        """Apply the schema migrations the store still needs (a PostgreSQL store shared by several
        processes changes only when asked; the embedded store makes its additions when it opens)."""
        if self._store is None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            self._store = self._open_for_batch(migrate=True)
        return Migrated(shown_url(self._store.url), list(self._store.applied))

    def _importer(self, on_error: OnError, duplicates: Duplicates, progress: Progress | None) -> Importer:
        return Importer(self.store, self.settings, on_error=on_error, duplicates=duplicates, progress=progress)

    def import_file(
        self,
        path: Path,
        mapping: Mapping,
        fmt: Format | None = None,
        on_error: OnError = OnError.FAIL,
        duplicates: Duplicates = Duplicates.KEEP,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import one file of events, items or users (``mapping.kind``)."""
        return self._importer(on_error, duplicates, progress).import_file(path, mapping, fmt)

    def import_dataset(
        self,
        name: str,
        paths: list[Path],
        on_error: OnError = OnError.FAIL,
        duplicates: Duplicates = Duplicates.KEEP,
        progress: Progress | None = None,
    ) -> list[ImportReport]:
        """Import a public dataset through its adapter; with no paths, read ``../shared/datasets``."""
        if name not in ADAPTERS:
            raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(ADAPTERS))}")
        adapter = ADAPTERS[name]
        plan = adapter.plan(paths or [SHARED_DATASETS / adapter.folder])
        return self._importer(on_error, duplicates, progress).import_plan(plan)

    def stats(self, top: int = 10) -> StoreSummary:
        """Counts, date range, funnel and top categories of the store."""
        return self.store.summary(top)

    def export(self, kind: RecordKind, path: Path) -> int:
        """Write events, items or users in the format the file name asks for; returns the number of rows."""
        export_format(path)  # a name no format fits is refused before the store is opened
        return self.store.export(kind, path)

    def copy_to(self, target_url: str, progress: Progress | None = None) -> Copied:
        """Copy this store into the store at ``target_url`` (e.g. an embedded store into PostgreSQL) the way a
        backup is written and restored, through a temporary folder: items, users and events through the same
        export and import a person would run (so event keys, repeated lines and attributes survive and running
        it again adds nothing), then impressions, campaigns, their assignments and the built profiles, in one
        transaction. Bundles are not in the store: point the new deployment at the same data directory, or train
        again. API keys are not copied (a PostgreSQL store keeps its own in ``api_keys``): create them again.

        Raises:
            ConfigError: the target is this store.
        """
        if shown_url(target_url) == self.url:
            raise ConfigError(f"{self.url} is the store being copied: name another store to copy it into")
        target = DataService(self.settings.model_copy(update={"store_url": target_url}))
        target._store = target._open_for_batch(migrate=True)
        try:
            with tempfile.TemporaryDirectory(prefix="shopsense-copy-") as folder:
                _, taken = dump(self.store, Path(folder))
                copied = load(Path(folder), target.store, target.settings, taken, progress)
            return Copied(shown_url(target_url), copied.written, target.store.summary(top=0), copied.skipped)
        finally:
            target.close()

    def backup(self, path: Path, *, force: bool = False) -> BackedUp:
        """Write every table of this store into the new folder ``path``: Parquet files and a ``manifest.json``
        of their rows and SHA-256 (see :mod:`shopsense.services.backup` for why this shape, and what is left
        out: API keys, bundles, jobs, the import log). Whole or not at all.

        Raises:
            ConfigError: ``path`` exists and ``force`` is not given, or it holds something else than a backup.
        """
        return write_backup(self.store, path, source=self.url, force=force)

    def restore(self, path: Path, progress: Progress | None = None) -> Copied:
        """Check the backup at ``path`` (every file's size, SHA-256 and rows against its manifest), then load it
        into this store as ``migrate-store`` loads its copy, in one transaction: a backup restored into a new
        store gives the same rows of every kind; restoring it twice writes nothing the second time. Users
        erased in this store (or in the one the backup came from) stay erased: their rows are left out.

        Raises:
            InputError: the backup is missing, incomplete or damaged (named); nothing was written.
        """
        folder = path.absolute()
        written_at = datetime.fromisoformat(verify(folder)["created_at"])
        loaded = load(folder, self.store, self.settings, written_at, progress)
        return Copied(self.url, loaded.written, self.store.summary(top=0), loaded.skipped)

    def close(self) -> None:
        """Close the store if it was opened."""
        if self._store is not None:
            self._store.close()
            self._store = None
