"""Models (``/models``): the bundles with their offline metrics, online CTR and conversion per version from
impressions, training as a job with progress, promote (pin) and roll back; the actions need the admin scope."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from shopsense.dashboard.charts import chart, empty, figure
from shopsense.dashboard.deps import Admin, Reader, job_json, render, serving, shop_of
from shopsense.errors import ConfigError
from shopsense.services.bundles import BundleInfo
from shopsense.services.keys import Scope
from shopsense.services.model_jobs import TRAIN_JOB, train_work

router = APIRouter()

WINDOWS = {"24 hours": 24.0, "7 days": 24.0 * 7, "30 days": 24.0 * 30, "all time": 24.0 * 365 * 100}
"""The periods the online numbers can cover."""


@router.get("/models", response_class=HTMLResponse)
async def models(
    request: Request,
    who: Reader,
    window: Annotated[str, Query(max_length=20)] = "all time",
    job: Annotated[str | None, Query(max_length=64)] = None,
    message: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    """Bundles, their offline and online numbers, and (for admins) train, promote and roll back."""
    svc = serving(request)
    name = svc.settings.serve.pipeline
    hours = WINDOWS.get(window, WINDOWS["all time"])
    versions, pinned = await asyncio.to_thread(lambda: (svc.bundles.versions(name), svc.bundles.pinned(name)))
    online = await asyncio.wrap_future(svc.impression_report(hours))
    served = svc.served
    return render(
        request,
        "models.html",
        pipeline=name,
        versions=versions,
        metrics=[_numbers(v.metrics) for v in versions],
        serving=served.info.version if served else None,
        pinned=pinned,
        model_error=svc.model_error,
        online=online,
        online_by_version={row["model_version"]: row for row in online},
        window=window if window in WINDOWS else "all time",
        windows=list(WINDOWS),
        job=job,
        message=message,
        can_admin=who.can(Scope.ADMIN),
        charts={"offline": _offline_chart(versions), "online": _online_chart(online)},
    )


@router.post("/models/train")
async def train(request: Request, who: Admin) -> RedirectResponse:
    """Start training the served pipeline as a job; back to the page, which follows the job's progress."""
    svc = serving(request)
    work = train_work(svc, svc.settings.serve.pipeline)
    started = await asyncio.to_thread(shop_of(request).jobs.submit, TRAIN_JOB, work)
    return RedirectResponse(f"/models?job={started.job_id}", status_code=303)


@router.get("/models/jobs/{job_id}")
async def job_status(request: Request, who: Admin, job_id: str) -> JSONResponse:
    """A training job's status and progress, for the page's progress bar."""
    return await job_json(request, job_id, TRAIN_JOB)


@router.post("/models/promote")
async def promote(request: Request, who: Admin, version: Annotated[str, Form(max_length=100)]) -> RedirectResponse:
    """Pin ``version`` and serve it now."""
    svc = serving(request)
    try:
        await asyncio.to_thread(svc.bundles.pin, svc.settings.serve.pipeline, version)
        await asyncio.to_thread(svc.reload)
        message = f"Pinned and serving {version}."
    except ConfigError as exc:
        message = str(exc)
    return RedirectResponse(f"/models?message={_quoted(message)}", status_code=303)


@router.post("/models/rollback")
async def rollback(request: Request, who: Admin) -> RedirectResponse:
    """Pin and serve the version before the current one."""
    try:
        info = await asyncio.to_thread(serving(request).rollback)
        message = f"Rolled back to {info.version}."
    except ConfigError as exc:
        message = str(exc)
    return RedirectResponse(f"/models?message={_quoted(message)}", status_code=303)


@router.post("/models/latest")
async def latest(request: Request, who: Admin) -> RedirectResponse:
    """Unpin: serve the newest bundle again."""
    svc = serving(request)
    await asyncio.to_thread(svc.bundles.pin, svc.settings.serve.pipeline, None)
    await asyncio.to_thread(svc.reload)
    return RedirectResponse(f"/models?message={_quoted('Serving the newest bundle.')}", status_code=303)


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:300])


def _numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric metrics of a bundle, nested keys joined by dots."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            found.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = float(value)
    return found


def _offline_chart(versions: list[BundleInfo]) -> Any:
    if not versions:
        return empty("No bundle trained yet.")
    ordered = list(reversed(versions))
    table = [_numbers(v.metrics) for v in ordered]
    names = sorted({k for row in table for k in row if 0 <= row[k] <= 1})[:8]
    if not names:
        return empty("The bundles hold no offline metrics.")
    fig = figure("Offline metrics per version (held out)", height=300)
    for metric in names:
        fig.add_scatter(
            x=[v.version for v in ordered], y=[row.get(metric) for row in table], mode="lines+markers", name=metric
        )
    fig.update_xaxes(type="category")
    return chart(fig)


def _online_chart(online: list[dict[str, Any]]) -> Any:
    if not online:
        return empty("No impressions recorded in this period (POST /v1/impressions).")
    versions = [row["model_version"] for row in online]
    fig = figure("Online CTR and conversion per version (from impressions)", barmode="group", height=300)
    fig.add_bar(x=versions, y=[row["ctr"] or 0 for row in online], name="CTR")
    fig.add_bar(x=versions, y=[row["conversion"] or 0 for row in online], name="conversion")
    fig.update_yaxes(tickformat=".1%")
    fig.update_xaxes(type="category")
    return chart(fig)
