"""Jobs over HTTP: long work (profile builds, audiences, training) answers 202 with a job to poll.

A job's ``result`` is a small JSON summary; bulky output (an audience's customers) is kept beside the job
and paged through ``GET /v1/jobs/{id}/rows``, so polling a job never carries thousands of rows.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field

from shopsense.api.deps import require, shop_of
from shopsense.api.errors import ApiError
from shopsense.api.routes.common import errors
from shopsense.domain import ID_PATTERN, checked_id
from shopsense.services.jobs import Job, JobRunner
from shopsense.services.keys import Scope

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
Marketing = Annotated[Any, Depends(require(Scope.MARKETING))]
JobId = Annotated[
    str, Path(min_length=1, max_length=64, json_schema_extra={"pattern": ID_PATTERN}), AfterValidator(checked_id)
]


async def runner(request: Request) -> JobRunner:
    """The shop's job runner (async: reaching it never blocks)."""
    return shop_of(request).jobs


Runner = Annotated[JobRunner, Depends(runner)]


class JobAccepted(BaseModel):
    job_id: str
    status: str
    url: str = Field(description="poll this for status, progress and the result")


class JobOut(BaseModel):
    job_id: str
    kind: str
    status: str = Field(description="queued, running, succeeded or failed")
    progress: float = Field(description="0..1")
    message: str | None = Field(description="what the job does now")
    result: Any = Field(description="a succeeded job's summary (JSON)")
    error: str | None = Field(description="why a failed job failed")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class JobRows(BaseModel):
    total: int
    offset: int
    rows: list[dict[str, Any]]


def accepted(job: Job, response: Response) -> JobAccepted:
    """The 202 answer to a request that started ``job``: where to poll it, also as the ``Location`` header."""
    url = f"{router.prefix}/{job.job_id}"
    response.headers["Location"] = url
    return JobAccepted(job_id=job.job_id, status=job.status.value, url=url)


def _out(job: Job) -> JobOut:
    result = None if job.result is None else json.loads(job.result)
    return JobOut(
        job_id=job.job_id,
        kind=job.kind,
        status=job.status.value,
        progress=job.progress,
        message=job.message,
        result=result,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
    )


@router.get("", response_model=list[JobOut], responses=errors())
def recent(_: Marketing, jobs: Runner, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobOut]:
    """The newest jobs of every kind, newest first."""
    return [_out(job) for job in jobs.recent(limit)]


@router.get("/{job_id}", response_model=JobOut, responses=errors(404))
def one(job_id: JobId, _: Marketing, jobs: Runner) -> JobOut:
    """One job: kind, status, progress and message, then its result or error, and its timestamps."""
    job = jobs.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return _out(job)


@router.get("/{job_id}/rows", response_model=JobRows, responses=errors(404))
def rows(
    job_id: JobId,
    _: Marketing,
    jobs: Runner,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> JobRows:
    """A page of the rows a succeeded job kept (an audience's customers, best first)."""
    table = jobs.rows(job_id)
    if table is None:
        raise ApiError(404, "not_found", f"job {job_id!r} has kept no rows (unknown, unfinished, or none to keep)")
    return JobRows(total=table.num_rows, offset=offset, rows=table.slice(offset, limit).to_pylist())
