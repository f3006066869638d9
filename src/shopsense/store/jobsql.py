"""The job statements both backends run (see :class:`shopsense.store.base.JobStore`), written once.

They are plain SQL with ``?`` placeholders (DuckDB's); the PostgreSQL store swaps them for ``%s``. The
methods of :class:`shopsense.store.base.JobStore` over them live here once too (:class:`SqlJobs`). The
tables: ``jobs`` (one row per job, small enough to poll) and ``job_rows`` (a job's bulky output as one
Parquet blob, read only when asked for)."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shopsense.store.base import JOB_COLUMNS, Job, JobStatus

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
JOBS_WITH_ROWS = "SELECT DISTINCT job_id FROM job_rows ORDER BY job_id"
REPLACE_ROWS = "UPDATE job_rows SET data = ? WHERE job_id = ?"


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


class SqlJobs:
    """:class:`shopsense.store.base.JobStore` over the statements above; a backend says only how one statement
    runs on its connection (:meth:`_job_query`, :meth:`_job_change`)."""

    def _job_query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Run a statement of this module and return its rows."""
        raise NotImplementedError

    def _job_change(self, sql: str, params: list[Any]) -> int:
        """Run a statement of this module that writes; the rows it changed."""
        raise NotImplementedError

    def create_job(self, job_id: str, kind: str) -> None:
        """See :class:`shopsense.store.base.JobStore`."""
        self._job_change(CREATE, [job_id, kind])

    def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: float | None = None,
        message: str | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        """See :class:`shopsense.store.base.JobStore`."""
        self._job_change(UPDATE, update_params(job_id, status, progress, message, result, error))

    def job(self, job_id: str) -> Job | None:
        """See :class:`shopsense.store.base.JobStore`."""
        rows = self._job_query(ONE, [job_id])
        return Job.from_row(rows[0]) if rows else None

    def recent_jobs(self, limit: int = 50) -> list[Job]:
        """See :class:`shopsense.store.base.JobStore`."""
        return [Job.from_row(row) for row in self._job_query(RECENT, [limit])]

    def fail_unfinished_jobs(self, error: str, silent_s: float = 0.0) -> int:
        """See :class:`shopsense.store.base.JobStore`."""
        return self._job_change(FAIL_UNFINISHED, [error, round(silent_s * 1000)])

    def save_job_rows(self, job_id: str, rows: pa.Table) -> None:
        """See :class:`shopsense.store.base.JobStore`."""
        self._job_change(SAVE_ROWS, [job_id, rows_blob(rows)])

    def job_rows(self, job_id: str) -> pa.Table | None:
        """See :class:`shopsense.store.base.JobStore`."""
        rows = self._job_query(ROWS, [job_id])
        return rows_table(rows[0][0]) if rows else None

    def _erase_job_rows(self, user_id: str) -> int:
        """Rewrite every job output naming the user (an audience's ``user_id`` column) without them;
        the rows removed. Run inside the erasure's transaction, on the store's writer in a server, so it
        decodes as little as it can: one blob at a time, only its Parquet footer (the schema) for an
        output without a ``user_id`` column, only that column for one that does, and the whole table
        only for an output that names the user."""
        erased = 0
        for (job_id,) in self._job_query(JOBS_WITH_ROWS, []):
            for (blob,) in self._job_query(ROWS, [job_id]):
                source = pa.BufferReader(blob)
                if "user_id" not in pq.read_schema(source).names:
                    continue
                users = pq.read_table(source, columns=["user_id"]).column(0)
                mine = pc.fill_null(pc.equal(users.cast(pa.string()), user_id), False)
                found = int(pc.sum(mine).as_py() or 0)
                if found:
                    kept = rows_table(blob).filter(pc.invert(mine))
                    self._job_change(REPLACE_ROWS, [rows_blob(kept), job_id])
                    erased += found
        return erased
