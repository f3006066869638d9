"""Audiences (``/audiences``): customers ranked by their propensity to buy an item, category or brand (a job,
its progress shown), or lookalikes of a segment, each customer with the main reason; filters by segment,
earlier campaigns' contacts, score threshold and top-N; export as CSV."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup

from shopsense.dashboard.charts import chart, empty, figure
from shopsense.dashboard.deps import Marketer, ViewerInfo, render, require, shop_of
from shopsense.dashboard.pages.marketing_common import attempt, csv_download, marketing
from shopsense.errors import ShopsenseError
from shopsense.marketing.audiences import AudienceSpec, Target
from shopsense.marketing.expressions import MAX_LENGTH
from shopsense.services import marketing_desk as desk
from shopsense.services.jobs import Job, JobStatus
from shopsense.services.keys import Scope
from shopsense.services.marketing import MarketingService

router = APIRouter()
Writer = Annotated[ViewerInfo, require(Scope.MARKETING)]
SHOWN = 200
"""Customers listed on the page (the export has every one kept)."""
KEPT = 100_000
"""Customers a propensity job keeps, best first (what its export holds)."""
HISTOGRAM_BINS = 30
AUDIENCE_JOB = desk.AUDIENCE_JOB


@dataclass(frozen=True)
class Choices:
    """What the forms offer: saved segments and campaigns (whose contacts can be left out)."""

    segments: dict[str, str]
    campaigns: list[str]


def _choices(m: MarketingService) -> Choices:
    return Choices(m.saved_segments(), m.campaign_names())


@router.get("/audiences", response_class=HTMLResponse)
async def audiences(
    request: Request,
    who: Marketer,
    job: Annotated[str | None, Query(max_length=64)] = None,
    seed: Annotated[str | None, Query(max_length=MAX_LENGTH)] = None,
    n: Annotated[int, Query(ge=1, le=100_000)] = 100,
    segment: Annotated[str | None, Query(max_length=MAX_LENGTH)] = None,
) -> HTMLResponse:
    """Build an audience; see a built one (``job``) or lookalikes of a segment (``seed``)."""
    return await _page(request, job_id=job, seed=seed, n=n, segment=segment or "")


async def _page(
    request: Request,
    *,
    job_id: str | None = None,
    seed: str | None = None,
    n: int = 100,
    segment: str = "",
    error: str | None = None,
    form: dict[str, Any] | None = None,
) -> HTMLResponse:
    choices, problem = await attempt(request, _choices)
    context: dict[str, Any] = {"choices": choices, "problem": problem, "error": error, "form": form or {}}
    context.update(segment=segment, seed=seed or "", n=n, job=None, result=None, rows=[], charts={}, lookalike=None)
    context.update(recent=await _recent(request))
    if job_id:
        found = await asyncio.to_thread(shop_of(request).jobs.get, job_id)
        if found is not None and found.kind == AUDIENCE_JOB:
            context.update(job=_job_dict(found))
            if found.status is JobStatus.SUCCEEDED:
                kept = await asyncio.to_thread(shop_of(request).jobs.rows, job_id)
                table = kept if kept is not None else pa.table({"score": pa.array([], pa.float64())})
                result = json.loads(found.result or "{}")
                shown = table.slice(0, SHOWN).to_pylist()
                context.update(result=result, rows=shown, charts=_charts(result, table, "score"))
        else:
            context.update(error=f"no audience job {job_id!r}")
    elif seed:
        expression = choices.segments.get(seed, seed) if choices else seed
        found_rows, wrong = await attempt(request, lambda m: desk.lookalike_audience(m, expression, n))
        if found_rows is None:
            context.update(error=wrong)
        else:
            shown = found_rows.slice(0, SHOWN).to_pylist()
            context.update(lookalike=found_rows.num_rows, rows=shown, charts=_charts({}, found_rows, "similarity"))
    return render(request, "audiences.html", **context)


@router.post("/audiences", response_class=HTMLResponse)
async def build(
    request: Request,
    who: Writer,
    kind: Annotated[Literal["item_id", "category", "brand"], Form()],
    value: Annotated[str, Form(min_length=1, max_length=512)],
    segment: Annotated[str, Form(max_length=MAX_LENGTH)] = "",
    contacted_by: Annotated[list[str] | None, Form()] = None,
    min_score: Annotated[float | None, Form(ge=0, le=1)] = None,
    top_n: Annotated[int | None, Form(ge=1, le=KEPT)] = None,
    exclude_bought_within_days: Annotated[float | None, Form(gt=0, le=3650)] = None,
    horizon_days: Annotated[float, Form(gt=0, le=365)] = 30.0,
) -> Response:
    """Start a propensity audience job and show its progress (a bad target is refused at once, with the
    nearest catalogue names)."""
    form: dict[str, Any] = {
        "kind": kind,
        "value": value,
        "segment": segment,
        "contacted_by": contacted_by or [],
        "top_n": top_n,
    }
    form.update(min_score=min_score, exclude_bought_within_days=exclude_bought_within_days, horizon_days=horizon_days)
    try:
        target = Target.model_validate({kind: value.strip()})
        spec = AudienceSpec(top_n=top_n, min_score=min_score, exclude_bought_within_days=exclude_bought_within_days)

        def checked(m: MarketingService) -> str | None:
            m.check_target(target)
            chosen = m.saved_segments().get(segment.strip(), segment.strip()) or None
            if chosen is not None:
                m.segments({"audience": chosen})  # a bad expression is the form's error, not a failed job
            return chosen

        expression = await marketing(request, checked)
    except (ShopsenseError, ValueError) as exc:
        return await _page(request, error=str(exc), form=form, segment=segment)
    work = desk.audience_work(
        target, spec, segment=expression, contacted_by=contacted_by or [], horizon_days=horizon_days, limit=KEPT
    )
    job = await asyncio.to_thread(shop_of(request).jobs.submit, AUDIENCE_JOB, work)
    return RedirectResponse(f"/audiences?job={job.job_id}", status_code=303)


@router.get("/audiences/jobs/{job_id}")
async def job_status(request: Request, who: Marketer, job_id: str) -> Any:
    """An audience job's status and progress, for the page to poll."""
    found = await asyncio.to_thread(shop_of(request).jobs.get, job_id)
    if found is None or found.kind != AUDIENCE_JOB:
        return JSONResponse({"error": {"code": "not_found", "message": f"no audience job {job_id!r}"}}, 404)
    return _job_dict(found)


@router.get("/audiences/jobs/{job_id}/export.csv")
async def export_job(request: Request, who: Marketer, job_id: str) -> Response:
    """Every customer a propensity job kept, best first: user_id, score, rank, main_reason."""
    jobs = shop_of(request).jobs
    found = await asyncio.to_thread(jobs.get, job_id[:64])
    rows = await asyncio.to_thread(jobs.rows, job_id) if found is not None and found.kind == AUDIENCE_JOB else None
    if rows is None:
        return JSONResponse({"error": {"code": "not_found", "message": f"no audience job {job_id!r} with rows"}}, 404)
    return csv_download(desk.csv_bytes(rows), f"audience-{job_id}.csv")


@router.get("/audiences/lookalike.csv")
async def export_lookalike(
    request: Request,
    who: Marketer,
    seed: Annotated[str, Query(min_length=1, max_length=MAX_LENGTH)],
    n: Annotated[int, Query(ge=1, le=100_000)] = 100,
) -> Response:
    """The lookalike audience of a segment (saved name or expression) as CSV."""

    def found(m: MarketingService) -> bytes:
        expression = m.saved_segments().get(seed, seed)
        return desk.csv_bytes(desk.lookalike_audience(m, expression, n))

    body, problem = await attempt(request, found)
    if body is None:
        return JSONResponse({"error": {"code": "conflict", "message": problem}}, 409)
    return csv_download(body, "lookalike.csv")


async def _recent(request: Request) -> list[dict[str, Any]]:
    """The latest audience jobs, newest first, with what they targeted and how many they kept."""
    jobs = await asyncio.to_thread(shop_of(request).jobs.recent, 50)
    found = []
    for job in jobs:
        if job.kind == AUDIENCE_JOB:
            result = json.loads(job.result or "{}")
            found.append({**_job_dict(job), "created_at": job.created_at, **result})
    return found[:10]


def _job_dict(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "progress": job.progress,
        "message": job.message,
        "error": job.error,
        "done": job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED),
    }


def _charts(result: dict[str, Any], rows: pa.Table, score: str) -> dict[str, Markup]:
    """The funnel, the scores' histogram and the main reasons, from the audience's columns (up to 100k rows:
    binned and counted in Arrow and numpy, never one Python object per customer)."""
    charts: dict[str, Markup] = {}
    funnel = result.get("funnel") or {}
    if funnel:
        steps = [(step, count) for step, count in funnel.items() if step not in ("scored", "selected")]
        fig = figure("Who was left out, and why", height=max(220, 32 * (len(steps) + 2) + 60))
        names = ["scored", *(s for s, _ in steps), "selected"]
        values = [funnel.get("scored", 0), *(-c for _, c in steps), funnel.get("selected", 0)]
        fig.add_bar(y=list(reversed(names)), x=list(reversed(values)), orientation="h", name="customers")
        charts["funnel"] = chart(fig)
    if rows.num_rows == 0:
        return {**charts, "scores": empty("Nobody in this audience."), "reasons": empty("Nobody in this audience.")}
    values = rows.column(score).to_numpy(zero_copy_only=False).astype(float)
    counts, edges = np.histogram(values[np.isfinite(values)], bins=HISTOGRAM_BINS)
    scores = figure(f"Customers by {score}", height=280)
    scores.add_bar(x=((edges[:-1] + edges[1:]) / 2).tolist(), y=counts.tolist(), width=float(np.diff(edges).min()))
    scores.update_xaxes(title_text=score)
    if score == "similarity" or "main_reason" not in rows.schema.names:  # a lookalike's reason is its similarity
        return {**charts, "scores": chart(scores)}
    reasons = pc.value_counts(pc.fill_null(pc.cast(rows.column("main_reason"), pa.string()), "none"))
    ranked = reasons.take(pc.array_sort_indices(reasons.field("counts"), order="descending")[:10])
    names = ranked.field("values").to_pylist()
    totals = ranked.field("counts").to_pylist()
    why = figure("Main reasons", height=max(220, 30 * len(names) + 70))
    why.add_bar(y=names[::-1], x=totals[::-1], orientation="h")
    return {**charts, "scores": chart(scores), "reasons": chart(why)}
