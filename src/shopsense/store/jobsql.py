"""The job statements both backends run (see :class:`shopsense.store.base.JobStore`), written once.

They are plain SQL with ``?`` placeholders (DuckDB's); the PostgreSQL store swaps them for ``%s``. The
tables: ``jobs`` (one row per job, small enough to poll) and ``job_rows`` (a job's bulky output as one
Parquet blob, read only when asked for)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from shopsense.store.base import JOB_COLUMNS, JobStatus

SELECT = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
CREATE = f"""INSERT INTO jobs (job_id, kind, status, progress, created_at, updated_at)
VALUES (?, ?, '{JobStatus.QUEUED}', 0, now(), now())"""
UPDATE = f"""UPDATE jobs SET status = coalesce(?, status), progress = coalesce(?, progress),
    message = coalesce(?, message), result = coalesce(?, result), error = coalesce(?, error),
    started_at = CASE WHEN ? = '{JobStatus.RUNNING}' THEN coalesce(started_at, now()) ELSE started_at END,
    finished_at = CASE WHEN ? IN ('{JobStatus.SUCCEEDED}', '{JobStatus.FAILED}') THEN now() ELSE finished_at END,
    updated_at = now()
WHERE job_id = ? AND status NOT IN ('{JobStatus.SUCCEEDED}', '{JobStatus.FAILED}')"""
"""An ended job stays as it ended: a job swept as interrupted does not turn succeeded later."""
ONE = f"{SELECT} WHERE job_id = ?"
RECENT = f"{SELECT} ORDER BY created_at DESC, job_id LIMIT ?"
FAIL_UNFINISHED = f"""UPDATE jobs SET status = '{JobStatus.FAILED}', error = ?, finished_at = now(), updated_at = now()
WHERE status IN ('{JobStatus.QUEUED}', '{JobStatus.RUNNING}') AND updated_at <= now() - ? * INTERVAL '1 millisecond'"""
SAVE_ROWS = "INSERT INTO job_rows (job_id, data) VALUES (?, ?)"
ROWS = "SELECT data FROM job_rows WHERE job_id = ?"


def update_params(
    job_id: str,
    status: JobStatus | None,
    progress: float | None,
    message: str | None,
    result: str | None,
    error: str | None,
) -> list[object]:
    """The parameters of :data:`UPDATE` (the status thrice: it also decides the timestamps)."""
    state = None if status is None else status.value
    return [state, progress, message, result, error, state, state, job_id]


def rows_blob(rows: pa.Table) -> bytes:
    """A job's output rows as the Parquet blob ``job_rows`` keeps (types kept, compressed)."""
    sink = io.BytesIO()
    pq.write_table(rows, sink, compression="zstd")
    return sink.getvalue()


def rows_table(blob: bytes) -> pa.Table:
    """The rows of a blob :func:`rows_blob` made."""
    return pq.read_table(pa.BufferReader(blob))
