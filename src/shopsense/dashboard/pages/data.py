"""Data (``/data``): the import log with rejected rows and their reasons; upload a file, preview it with a
suggested column mapping, and import it as a job (admin scope)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from shopsense.dashboard.charts import chart, empty, figure
from shopsense.dashboard.deps import Admin, insights, job_json, render, serving, shop_of
from shopsense.domain import RecordKind
from shopsense.errors import ConfigError
from shopsense.ingest.importer import OnError
from shopsense.services.keys import Scope
from shopsense.services.uploads import FIELDS, KEEP_HOURS, REQUIRED, Uploads

router = APIRouter()
KINDS = [k.value for k in RecordKind]
IMPORT_JOB = "import"


def _uploads(request: Request) -> Uploads:
    return Uploads(serving(request).settings)


@router.get("/data", response_class=HTMLResponse)
async def data(
    request: Request,
    who: Admin,
    job: Annotated[str | None, Query(max_length=64)] = None,
    message: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    """The import log, the latest rejected rows, and the upload form."""
    log = await asyncio.wrap_future(insights(request).import_log(100))
    rejects = await asyncio.to_thread(_uploads(request).rejects, 5, 20)
    return render(
        request,
        "data.html",
        log=log,
        rejects=rejects,
        kinds=KINDS,
        job=job,
        message=message,
        can_admin=who.can(Scope.ADMIN),
        max_upload=_size(serving(request).settings.serve.max_body_bytes),
        keep_hours=KEEP_HOURS,
        plot=_log_chart(log),
    )


@router.post("/data/upload")
async def upload(
    request: Request,
    who: Admin,
    file: UploadFile,
    kind: Annotated[str, Form()] = "events",
) -> Response:
    """Keep an uploaded file and show its column-mapping preview."""
    if kind not in KINDS:
        kind = "events"
    try:
        token = await asyncio.to_thread(_uploads(request).save, file.filename or "upload.csv", file.file)
    except ConfigError as exc:
        return RedirectResponse(f"/data?message={quote(str(exc)[:300])}", status_code=303)
    return RedirectResponse(f"/data/preview?upload={token}&kind={kind}", status_code=303)


@router.get("/data/preview", response_class=HTMLResponse)
async def preview(
    request: Request,
    who: Admin,
    upload: Annotated[str, Query(max_length=32)],
    kind: Annotated[str, Query(max_length=10)] = "events",
) -> Response:
    """An upload's first rows and the mapping of each field to a column, to check before importing."""
    record_kind = RecordKind(kind) if kind in KINDS else RecordKind.EVENTS
    try:
        seen = await asyncio.to_thread(_uploads(request).preview, upload, record_kind)
    except ConfigError as exc:
        return RedirectResponse(f"/data?message={quote(str(exc)[:300])}", status_code=303)
    return render(
        request,
        "data_preview.html",
        seen=seen,
        fields=FIELDS[record_kind],
        required=REQUIRED[record_kind],
        on_error=[e.value for e in OnError],
    )


@router.post("/data/import")
async def start_import(request: Request, who: Admin) -> Response:
    """Import an upload with the mapping chosen on its preview, as a job; back to the log, which follows it."""
    form = await request.form()
    upload, kind = str(form.get("upload", "")), str(form.get("kind", "events"))
    record_kind = RecordKind(kind) if kind in KINDS else RecordKind.EVENTS
    columns = {f: str(form.get(f"col_{f}", "")) for f in FIELDS[record_kind]}
    options: dict[str, Any] = {"on_error": str(form.get("on_error", OnError.SKIP.value))}
    for name in ("timestamp_format", "timezone"):
        value = str(form.get(name, "")).strip()
        if value:
            options[name] = value
    try:
        work = _uploads(request).import_job(upload, record_kind, columns, options)
    except (ConfigError, ValueError) as exc:
        return RedirectResponse(f"/data?message={quote(str(exc)[:300])}", status_code=303)
    started = await asyncio.to_thread(shop_of(request).jobs.submit, IMPORT_JOB, work)
    return RedirectResponse(f"/data?job={started.job_id}", status_code=303)


@router.get("/data/jobs/{job_id}")
async def job_status(request: Request, who: Admin, job_id: str) -> JSONResponse:
    """An import job's status and report, for the page's progress bar."""
    return await job_json(request, job_id, IMPORT_JOB)


def _log_chart(log: list[dict[str, Any]]) -> Any:
    if not log:
        return empty("Nothing imported yet.")
    rows = list(reversed(log[:30]))
    labels = [f"#{r['batch_id']} {r['kind']}" for r in rows]
    fig = figure("Rows per import (newest 30)", barmode="stack", height=280)
    fig.add_bar(x=labels, y=[r["written"] or 0 for r in rows], name="written")
    fig.add_bar(x=labels, y=[r["already_stored"] or 0 for r in rows], name="already stored")
    fig.add_bar(
        x=labels,
        y=[max((r["received"] or 0) - (r["written"] or 0) - (r["already_stored"] or 0), 0) for r in rows],
        name="not written (rejected or collapsed)",
    )
    fig.update_xaxes(type="category")
    return chart(fig)


def _size(count: int) -> str:
    """A byte count in words: ``16 MiB``, ``512 KiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"
