"""Files uploaded through the dashboard: kept under ``<data_dir>/uploads``, previewed with a suggested column
mapping, imported as a job (through :class:`~shopsense.services.data.DataService`), and the rejects files
imports leave behind (``<data_dir>/rejects``) read back for the import log.

An upload holds raw customer rows, so it is kept no longer than it is needed: a successful import removes
it at once (the stored rows are then what erasure covers); an upload whose import failed, or that was never
imported, is kept for :data:`KEEP_HOURS` so the admin can fix the mapping and try again from its preview,
then removed by the next upload (:meth:`Uploads.save`). The rejects files an import writes are a separate
matter (``<data_dir>/rejects``, shown on the data page).
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError
from shopsense.ingest.importer import ImportReport, OnError
from shopsense.ingest.mapping import load_mapping
from shopsense.services.jobs import JobContext
from shopsense.settings import Settings

UPLOADS = "uploads"
REJECTS = "rejects"
PREVIEW_ROWS = 8
PREVIEW_BYTES = 256 * 1024
KEEP_HOURS = 24.0
"""How long an upload not (successfully) imported is kept before the next upload removes it."""
SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".jsonl", ".ndjson", ".json", ".jsonl.gz", ".parquet")
"""The file types an upload may have (the importer's formats)."""

FIELDS: dict[RecordKind, tuple[str, ...]] = {
    RecordKind.EVENTS: (
        "user_id",
        "item_id",
        "type",
        "timestamp",
        "event_id",
        "channel",
        "session_id",
        "quantity",
        "value",
        "rating",
    ),
    RecordKind.ITEMS: (
        "item_id",
        "title",
        "description",
        "category",
        "brand",
        "price",
        "currency",
        "available",
        "stock",
        "first_seen",
    ),
    RecordKind.USERS: ("user_id", "first_seen"),
}
"""The fields a mapping can fill, per kind, the required ones first."""
REQUIRED: dict[RecordKind, tuple[str, ...]] = {
    RecordKind.EVENTS: ("user_id", "item_id", "type", "timestamp"),
    RecordKind.ITEMS: ("item_id",),
    RecordKind.USERS: ("user_id",),
}
SYNONYMS: dict[str, tuple[str, ...]] = {
    "user_id": ("user", "customer", "customerid", "customer_id", "client", "visitorid", "visitor", "userid"),
    "item_id": ("item", "product", "productid", "product_id", "sku", "stockcode", "itemid", "article"),
    "type": ("event", "event_type", "eventtype", "action", "kind"),
    "timestamp": ("time", "ts", "date", "datetime", "invoicedate", "event_time", "created_at"),
    "event_id": ("id", "eventid", "invoice", "invoiceno"),
    "session_id": ("session", "sessionid", "order", "order_id"),
    "quantity": ("qty", "count", "amount"),
    "value": ("revenue", "total", "sales"),
    "title": ("name", "description_short", "product_name"),
    "category": ("categories", "category_path", "department"),
    "price": ("unitprice", "unit_price", "cost"),
}


@dataclass
class Preview:
    """An upload's first rows and the mapping suggested for them."""

    token: str
    name: str
    kind: RecordKind
    columns: list[str]
    rows: list[list[str]]
    suggested: dict[str, str] = field(default_factory=dict)
    error: str | None = None


class Uploads:
    """The dashboard's uploaded files and the imports' rejects files, under ``settings.data_dir``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir / UPLOADS
        self.rejects_dir = settings.data_dir / REJECTS

    def save(self, name: str, content: IO[bytes]) -> str:
        """Keep an uploaded file; its token (the preview and import name it by that, never by a path).

        Raises:
            ConfigError: a file type the importer does not read.
        """
        clean = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[:120] or "upload.csv"
        if not clean.lower().endswith(SUFFIXES):
            raise ConfigError(f"{name!r}: upload a CSV, JSON Lines or Parquet file ({', '.join(SUFFIXES)})")
        self.remove_stale()
        token = secrets.token_hex(8)
        folder = self.root / token
        folder.mkdir(parents=True, exist_ok=False)
        with (folder / clean).open("wb") as out:
            shutil.copyfileobj(content, out, 1 << 20)
        return token

    def path(self, token: str) -> Path:
        """The uploaded file of ``token``.

        Raises:
            ConfigError: no such upload.
        """
        if not re.fullmatch(r"[0-9a-f]{16}", token):
            raise ConfigError("no such upload")
        files = sorted((self.root / token).glob("*")) if (self.root / token).is_dir() else []
        if not files:
            raise ConfigError("no such upload (it may have been imported and removed)")
        return files[0]

    def preview(self, token: str, kind: RecordKind) -> Preview:
        """The first rows of an upload and a suggested mapping of ``kind``'s fields to its columns."""
        path = self.path(token)
        try:
            columns, rows = _head(path)
        except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
            return Preview(token, path.name, kind, [], [], error=f"the file could not be read: {exc}")
        return Preview(token, path.name, kind, columns, rows, suggest(kind, columns))

    def import_job(self, token: str, kind: RecordKind, columns: dict[str, str], options: dict[str, Any]) -> Any:
        """The work of a job importing an upload with the given mapping (``field -> column``); its result is
        the import's report. The mapping is checked here, before the job starts.

        Raises:
            ConfigError: a bad mapping or option, or no such upload.
        """
        path = self.path(token)
        on_error = OnError(options.pop("on_error", OnError.SKIP.value))
        mapping = load_mapping(None, kind, {"columns": {f: c for f, c in columns.items() if c}, **options})
        settings = self.settings

        def work(job: JobContext) -> dict[str, Any]:
            from shopsense.services.data import DataService

            job.progress(0.0, f"importing {path.name}")
            data = DataService(settings, lambda: job.store)
            stages = iter(range(1, 100))
            report: ImportReport = data.import_file(
                path, mapping, on_error=on_error, progress=lambda stage: job.progress(1 - 0.8 ** next(stages), stage)
            )
            shutil.rmtree(path.parent, ignore_errors=True)  # imported: the raw file is no longer needed
            return _report(report)

        return work

    def remove_stale(self, hours: float = KEEP_HOURS, now: float | None = None) -> int:
        """Remove the uploads older than ``hours`` (never imported, or their import failed); how many."""
        if not self.root.is_dir():
            return 0
        cutoff = (time.time() if now is None else now) - hours * 3600
        stale = [d for d in self.root.iterdir() if d.is_dir() and d.stat().st_mtime < cutoff]
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
        return len(stale)

    def rejects(self, limit: int = 10, rows: int = 20) -> list[dict[str, Any]]:
        """The newest rejects files, each with its rejected rows (at most ``rows``) and their reasons."""
        if not self.rejects_dir.is_dir():
            return []
        files = sorted(self.rejects_dir.glob("*.rejects.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
        found = []
        for path in files[:limit]:
            try:
                columns, head = _head(path, rows)
                total = _lines(path) - 1
            except (OSError, ValueError, UnicodeDecodeError, csv.Error):
                continue
            found.append({"name": path.name, "columns": columns, "rows": head, "total": max(total, len(head))})
        return found


def suggest(kind: RecordKind, columns: list[str]) -> dict[str, str]:
    """The source column each field most likely comes from: the same name, else a common synonym."""
    plain = {re.sub(r"[^a-z0-9]", "", c.lower()): c for c in columns}
    chosen: dict[str, str] = {}
    for name in FIELDS[kind]:
        for candidate in (name, *SYNONYMS.get(name, ())):
            column = plain.get(re.sub(r"[^a-z0-9]", "", candidate))
            if column is not None and column not in chosen.values():
                chosen[name] = column
                break
    return chosen


def _report(report: ImportReport) -> dict[str, Any]:
    keep = ("kind", "source", "rows_read", "rows_rejected", "rows_written", "already_stored", "new_users")
    summary = {k: v for k, v in report.to_dict().items() if k in keep}
    summary.update(problems=report.problems_by_reason, hints=report.hints, seconds=round(report.seconds, 1))
    summary["rejects_file"] = Path(report.rejects_file).name if report.rejects_file else None
    return summary


def _head(path: Path, rows: int = PREVIEW_ROWS) -> tuple[list[str], list[list[str]]]:
    """The column names and first rows of a CSV, JSON Lines or Parquet file, as text."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = next(pq.ParquetFile(path).iter_batches(batch_size=rows), None)
        if table is None:
            return [], []
        return table.schema.names, [[_text(v) for v in row.values()] for row in table.to_pylist()]
    opener: Any = open
    if name.endswith(".gz"):
        import gzip

        opener = gzip.open
    with opener(path, "rb") as raw:
        head = raw.read(PREVIEW_BYTES).decode("utf-8", errors="replace")
    lines = head.splitlines()
    if not head.endswith("\n") and len(lines) > 1:
        lines = lines[:-1]  # a line cut by the preview's limit
    if ".json" in name or ".ndjson" in name:
        records = [json.loads(line) for line in lines[:rows] if line.strip()]
        columns = list(dict.fromkeys(k for r in records for k in r))
        return columns, [[_text(r.get(c)) for c in columns] for r in records]
    sample = "\n".join(lines[:50])
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    parsed = list(csv.reader(io.StringIO("\n".join(lines[: rows + 1])), dialect))
    return (parsed[0], parsed[1:]) if parsed else ([], [])


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _text(value: Any) -> str:
    return "" if value is None else str(value)
