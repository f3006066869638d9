"""JobRunner: jobs run on their own store handle, report progress (throttled), keep a result or an error, survive
failures, and a runner that starts marks the jobs a dead process left unfinished failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shopsense.errors import ShopsenseError
from shopsense.services.jobs import INTERRUPTED, PROGRESS_INTERVAL_S, Job, JobContext, JobRunner, JobStatus
from shopsense.settings import Settings
from shopsense.store import Store, open_store

WAIT_S = 30.0


@pytest.fixture(params=["duckdb", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The embedded store in a file, or a fresh PostgreSQL database (skipped without PostgreSQL)."""
    url = f"duckdb:///{tmp_path / 's.duckdb'}" if request.param == "duckdb" else request.getfixturevalue("postgres_url")
    opened = open_store(url)
    yield opened
    opened.close()


@pytest.fixture
def runner(settings: Settings, store: Store) -> Iterator[JobRunner]:
    jobs = JobRunner(settings, store.handle)
    yield jobs
    jobs.close()


def _ended(jobs: JobRunner, job_id: str) -> Job:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        assert job is not None
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not end within {WAIT_S}s")


def test_a_job_reports_progress_while_it_runs_and_keeps_its_result(runner: JobRunner) -> None:
    halfway, finish = threading.Event(), threading.Event()

    def work(job: JobContext) -> dict[str, Any]:
        job.progress(0.5, "halfway")
        halfway.set()
        assert finish.wait(WAIT_S)
        return {"answer": 42}

    queued = runner.submit("test", work)
    assert queued.kind == "test" and queued.status is JobStatus.QUEUED
    assert halfway.wait(WAIT_S)
    running = runner.get(queued.job_id)
    assert running is not None and running.status is JobStatus.RUNNING
    assert (running.progress, running.message) == (0.5, "halfway") and running.started_at is not None
    finish.set()
    done = _ended(runner, queued.job_id)
    assert done.status is JobStatus.SUCCEEDED and done.result == '{"answer": 42}' and done.progress == 1.0
    assert [j.job_id for j in runner.recent()] == [queued.job_id]


def test_a_failing_job_is_failed_with_its_error_and_the_runner_goes_on(runner: JobRunner) -> None:
    def fail(job: JobContext) -> None:
        raise ShopsenseError("the store has no events: import some first")

    def crash(job: JobContext) -> None:
        raise KeyError("x")

    failed, crashed = runner.submit("test", fail), runner.submit("test", crash)
    after = runner.submit("test", lambda job: "fine")
    assert _ended(runner, failed.job_id).error == "the store has no events: import some first"
    assert _ended(runner, crashed.job_id).error == "KeyError: 'x'", "a bug's type is named"
    assert _ended(runner, after.job_id).status is JobStatus.SUCCEEDED


def test_a_runner_that_starts_marks_the_jobs_a_dead_process_left_interrupted(settings: Settings, store: Store) -> None:
    store.create_job("left-running", "audience")
    store.update_job("left-running", status=JobStatus.RUNNING, progress=0.3)
    reader = JobRunner(settings, store.handle)
    try:
        left = reader.get("left-running")
        assert left is not None and left.status is JobStatus.RUNNING, "reading jobs starts no runner"
        reader.start()
        swept = reader.get("left-running")
        assert swept is not None and (swept.status, swept.error) == (JobStatus.FAILED, INTERRUPTED)
    finally:
        reader.close()


class _Recorded:
    """A stand-in store that records the progress writes a job makes."""

    def __init__(self) -> None:
        self.writes: list[tuple[float | None, str | None]] = []

    def update_job(self, job_id: str, *, progress: float | None = None, message: str | None = None) -> None:
        self.writes.append((progress, message))


def test_progress_writes_are_throttled_within_a_stage_but_a_new_stage_is_written_at_once(settings: Settings) -> None:
    recorded = _Recorded()
    job = JobContext(settings, recorded, "j")  # type: ignore[arg-type]
    for step in range(1000):
        job.progress(step / 1000, "scanning")
    job.progress(0.9, "saving")
    job.progress(1.7, "saving")
    assert recorded.writes[0] == (0.0, "scanning") and recorded.writes[-1] == (0.9, "saving")
    assert len(recorded.writes) <= 4, "a tight loop is not a write per report"
    time.sleep(PROGRESS_INTERVAL_S)
    job.progress(1.7, "saving")
    assert recorded.writes[-1] == (1.0, "saving"), "clamped to 0..1"


def test_on_a_shared_store_a_starting_runner_fails_only_the_jobs_nobody_keeps_alive(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shopsense.services.jobs.HEARTBEAT_S", 0.05)
    release = threading.Event()
    alive = JobRunner(settings, store.handle, silent_s=0.5)  # another replica, running a long job
    try:
        held = alive.submit("train", lambda job: release.wait(WAIT_S))
        store.create_job("orphan", "audience")  # its runner died before it could start it
        runner_of_the_restarted = JobRunner(settings, store.handle, silent_s=0.5)
        try:
            runner_of_the_restarted.start()
            deadline = time.monotonic() + WAIT_S
            while (orphan := store.job("orphan")) is not None and orphan.status is JobStatus.QUEUED:
                assert time.monotonic() < deadline, "the silent job was never swept"
                time.sleep(0.05)
            assert orphan is not None and (orphan.status, orphan.error) == (JobStatus.FAILED, INTERRUPTED)
            still = store.job(held.job_id)
            assert still is not None and still.status is JobStatus.RUNNING, "a job kept alive is left alone"
        finally:
            runner_of_the_restarted.close()
        release.set()
        assert _ended(alive, held.job_id).status is JobStatus.SUCCEEDED
    finally:
        release.set()
        alive.close()
