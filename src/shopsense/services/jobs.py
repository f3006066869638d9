"""JobRunner: long work (training, profile builds, audiences) as jobs, off the request and ingest paths.

In a server the store's one writer thread owns ingestion: work that scans every event or fits LightGBM
there would hold up every event write for its whole length. A job runs instead on a worker thread of its
own, over a store handle of its own (:meth:`~shopsense.store.base.Store.handle`: a DuckDB cursor, another
PostgreSQL connection), and records what it does in the store's jobs table (status, progress, result or
error), so the client that started it, another replica or ``shopsense jobs watch`` can follow it.

The runner starts lazily: a process that only reads jobs (``shopsense jobs list``) opens one handle and
starts no threads. When it starts, jobs still marked queued or running were left by a process that died
(they can never finish) and are marked failed, "interrupted". On a store one process holds, that is every
unfinished job. On one several server processes share (PostgreSQL replicas), another replica's jobs are
alive: each runner touches the rows of the jobs it holds every :data:`HEARTBEAT_S`, and a job whose row went
:data:`SILENT_S` without a change is the one marked, by whichever runner looks first.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from shopsense.errors import ShopsenseError
from shopsense.settings import Settings
from shopsense.store.base import Job as Job
from shopsense.store.base import JobStatus as JobStatus
from shopsense.store.base import Store

if TYPE_CHECKING:
    from shopsense.services.marketing import MarketingService
    from shopsense.services.recommendation import RecommendationService

log = logging.getLogger("shopsense.jobs")

PROGRESS_INTERVAL_S = 0.25
"""At most one progress write per job this often: a tight loop reporting progress must not become a write
load on the store (the latest report is written at the next chance, or with the job's end)."""
INTERRUPTED = "interrupted: the process running this job stopped before it finished"
HEARTBEAT_S = 5.0
"""On a store several processes share, how often a runner marks the jobs it holds alive, and looks for jobs
whose runner died."""
SILENT_S = 30.0
"""On a shared store, a queued or running job whose row has not changed for this long lost its runner."""


class JobContext:
    """What a job's work gets: its store handle, the services over it, and a way to report progress."""

    def __init__(self, settings: Settings, store: Store, job_id: str) -> None:
        self.settings = settings
        self.store = store
        self.job_id = job_id
        self._last_write = 0.0
        self._message: str | None = None

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the work got (0..1) and what it does now. A new message (a new stage) is written at
        once; more reports within a stage at most every :data:`PROGRESS_INTERVAL_S` (one in between is
        dropped: the next supersedes it)."""
        now = time.monotonic()
        if message == self._message and now - self._last_write < PROGRESS_INTERVAL_S:
            return
        self._last_write, self._message = now, message
        self.store.update_job(self.job_id, progress=min(max(fraction, 0.0), 1.0), message=message)

    def keep_rows(self, rows: pa.Table) -> None:
        """Keep bulky output (an audience's customers) beside the job, so its result stays a small summary;
        ``GET /v1/jobs/{id}/rows`` pages through them."""
        self.store.save_job_rows(self.job_id, rows)

    @cached_property
    def marketing(self) -> MarketingService:
        """Marketing over this job's handle."""
        from shopsense.services.marketing import MarketingService

        return MarketingService(self.settings, self.store)

    @cached_property
    def recommendations(self) -> RecommendationService:
        """Training and recommendations over this job's handle (which the job, not the service, closes)."""
        from shopsense.services.data import DataService
        from shopsense.services.recommendation import RecommendationService

        return RecommendationService(DataService(self.settings, lambda: self.store))


Work = Callable[[JobContext], Any]
"""A job's work: returns its result, what :func:`json.dumps` takes plus times and numpy scalars."""


class JobRunner:
    """Runs jobs on ``settings.jobs.workers`` threads, each with its own handle from ``open_handle``.

    ``silent_s``: how long an unfinished job's row must be unchanged before it counts as abandoned; 0 for a
    store one process holds (no heartbeat then), :data:`SILENT_S` for one several processes share."""

    def __init__(self, settings: Settings, open_handle: Callable[[], Store], *, silent_s: float = 0.0) -> None:
        self.settings = settings
        self._open = open_handle
        self._silent_s = silent_s
        self._held: set[str] = set()
        """Jobs this runner queued and has not ended: the heartbeat keeps their rows fresh."""
        self._stopping = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._lock = threading.Lock()
        self._board: Store | None = None
        self._handles: queue.SimpleQueue[Store] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None

    # -- reading jobs (any process) ----------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """One job as stored, or None."""
        with self._lock:
            return self._bookkeeping().job(job_id)

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest ``limit`` jobs, newest first."""
        with self._lock:
            return self._bookkeeping().recent_jobs(limit)

    def rows(self, job_id: str) -> pa.Table | None:
        """The rows a job kept (:meth:`JobContext.keep_rows`), or None."""
        with self._lock:
            return self._bookkeeping().job_rows(job_id)

    def _bookkeeping(self) -> Store:
        """The handle for creating and reading jobs (callers hold the lock: one thread at a time uses it)."""
        if self._board is None:
            self._board = self._open()
        return self._board

    # -- running jobs -------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the workers' handles and mark the jobs a dead process left unfinished failed (once)."""
        with self._lock:
            if self._pool is not None:
                return
            self._sweep()
            workers = self.settings.jobs.workers
            for _ in range(workers):  # opened here, not on the workers: a handle is made beside no other use
                self._handles.put(self._open())
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="shopsense-job")
            if self._silent_s > 0:
                self._heartbeat = threading.Thread(target=self._beat, name="shopsense-job-heartbeat", daemon=True)
                self._heartbeat.start()

    def _sweep(self) -> None:
        """Mark the jobs whose runner died failed (callers hold the lock)."""
        swept = self._bookkeeping().fail_unfinished_jobs(INTERRUPTED, self._silent_s)
        if swept:
            log.warning("marked %d unfinished job(s) of a stopped process failed", swept)

    def _beat(self) -> None:
        """Keep the rows of this runner's jobs fresh and sweep the others' abandoned ones, until closed."""
        while not self._stopping.wait(HEARTBEAT_S):
            try:
                with self._lock:
                    board = self._bookkeeping()
                    for job_id in list(self._held):
                        board.update_job(job_id)  # no field given: only ``updated_at`` moves
                    self._sweep()
            except Exception:  # the store is away for a moment: the next beat tries again
                log.exception("the jobs heartbeat failed")

    def submit(self, kind: str, work: Work) -> Job:
        """Record a queued job of ``kind`` and run ``work`` when a worker is free; the job as recorded."""
        self.start()
        job_id = uuid.uuid4().hex
        with self._lock:
            board = self._bookkeeping()
            board.create_job(job_id, kind)
            self._held.add(job_id)
            job = board.job(job_id)
            assert self._pool is not None and job is not None
            self._pool.submit(self._run, job_id, work)
        return job

    def _run(self, job_id: str, work: Work) -> None:
        """Run one job on a free handle; any failure is the job's, never the runner's."""
        store = self._handles.get()
        try:
            store.update_job(job_id, status=JobStatus.RUNNING)
            result = json.dumps(work(JobContext(self.settings, store, job_id)), default=_plain)
            store.update_job(job_id, status=JobStatus.SUCCEEDED, progress=1.0, result=result)
        except Exception as exc:  # the job failed: say why in the job, and keep serving the next one
            log.exception("job %s failed", job_id)
            try:
                store.update_job(job_id, status=JobStatus.FAILED, error=_reason(exc))
            except Exception:  # the store itself is failing: the log has it; the next start sweeps the job
                log.exception("job %s: its failure could not be recorded", job_id)
        finally:
            self._handles.put(store)
            with self._lock:
                self._held.discard(job_id)

    def close(self) -> None:
        """Wait for running jobs, drop queued ones (the next start marks them interrupted), close the handles."""
        self._stopping.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            board, self._board = self._board, None
        while not self._handles.empty():
            self._handles.get().close()
        if board is not None:
            board.close()


def _plain(value: Any) -> Any:
    """What :func:`json.dumps` cannot write itself, as JSON: times as ISO 8601, numpy scalars as numbers,
    anything else as its text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _reason(exc: Exception) -> str:
    """A failed job's error: shopsense's own messages as they are, anything else with its type."""
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, ShopsenseError) else f"{type(exc).__name__}: {text}"
