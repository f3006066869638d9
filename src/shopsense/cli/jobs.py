"""``shopsense jobs``: list, show and watch the jobs a server runs (training, profile builds, audiences).

Reading jobs starts no runner, so it never marks another process's running jobs interrupted. On the embedded
store the server holds the file: these commands read jobs once it stopped (on PostgreSQL, while it runs).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shopsense.cli.common import JsonOpt, _shop, console, echo_json, out
from shopsense.errors import ConfigError
from shopsense.services.jobs import Job, JobRunner, JobStatus

jobs_app = typer.Typer(help="Long work run as jobs: list, show, watch.", no_args_is_help=True)

POLL_S = 0.25
"""How often ``watch`` reads the job: about as often as a job writes its progress."""
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED)
JobIdArg = Annotated[str, typer.Argument(help="the job's id (`shopsense jobs list`)")]


@jobs_app.command("list")
def list_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="newest jobs shown")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The newest jobs, newest first: id, kind, status, progress, message, times."""
    with _shop(ctx) as shop:
        jobs = shop.jobs.recent(limit)
    if as_json:
        echo_json([_plain(job) for job in jobs])
        return
    view = Table(title="jobs", highlight=False)
    for column in ("job_id", "kind", "status", "progress", "message", "created_at", "finished_at"):
        view.add_column(column, overflow="fold")
    for job in jobs:
        view.add_row(
            job.job_id,
            job.kind,
            job.status.value,
            f"{job.progress:.0%}",
            job.error or job.message or "",
            str(job.created_at),
            str(job.finished_at or ""),
        )
    out.print(view)


@jobs_app.command("show")
def show(ctx: typer.Context, job_id: JobIdArg, as_json: JsonOpt = False) -> None:
    """One job: status, progress, message, result or error, timestamps. Exit 1 if it failed."""
    with _shop(ctx) as shop:
        job = _found(shop.jobs, job_id)
    shown = _plain(job)
    if as_json:
        echo_json(shown)
    else:
        for key, value in shown.items():
            out.print(f"{key}: {json.dumps(value, default=str) if isinstance(value, dict | list) else value}")
    _exit_for(job)


@jobs_app.command("watch")
def watch(ctx: typer.Context, job_id: JobIdArg) -> None:
    """A progress bar fed by the job's reported progress until it ends; then its result (exit 0) or its error
    (exit 1)."""
    with _shop(ctx) as shop:
        job = _found(shop.jobs, job_id)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(_describe(job), total=100, completed=round(job.progress * 100))
            while job.status not in ENDED:
                time.sleep(POLL_S)
                job = _found(shop.jobs, job_id)
                bar.update(task, description=_describe(job), completed=round(job.progress * 100))
    if job.status is JobStatus.SUCCEEDED:
        echo_json(_plain(job)["result"])
    _exit_for(job)


def _found(jobs: JobRunner, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None:
        raise ConfigError(f"no job {job_id!r} (`shopsense jobs list` shows the recent ones)")
    return job


def _describe(job: Job) -> str:
    return f"{job.kind} {job.job_id[:8]} {job.status.value}" + (f": {job.message}" if job.message else "")


def _plain(job: Job) -> dict[str, Any]:
    """The job as JSON-ready values, its result parsed."""
    return {
        "job_id": job.job_id,
        "kind": job.kind,
        "status": job.status.value,
        "progress": job.progress,
        "message": job.message,
        "result": None if job.result is None else json.loads(job.result),
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def _exit_for(job: Job) -> None:
    """A failed job says why on stderr and exits 1, so a script waiting on it stops."""
    if job.status is JobStatus.FAILED:
        console.print(f"job {job.job_id} failed: {job.error}", highlight=False, markup=False, style="red")
        raise typer.Exit(1)
