"""POST /v1/impressions (what was shown) and GET /v1/impressions/report (CTR and conversion per model)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from shopsense.api.deps import require, service
from shopsense.api.routes.common import errors
from shopsense.api.routes.events import write_response
from shopsense.api.schemas import ImpressionIn, ImpressionReport, ImpressionReportRow, WriteResponse
from shopsense.services.keys import Scope
from shopsense.services.serving import ServingService

router = APIRouter(prefix="/v1/impressions", tags=["impressions"])


@router.post("", response_model=WriteResponse, responses=errors(400))
async def post_impressions(
    body: ImpressionIn,
    _: Annotated[Any, Depends(require(Scope.EVENTS_WRITE))],
    svc: Annotated[ServingService, Depends(service)],
) -> WriteResponse:
    """Record the items of one recommendation as shown, in display order; clicks and purchases of
    those items by that user within ``serve.attribution_hours`` are attributed to its model version.
    Items the catalogue does not know are listed as rejected."""
    written, rejected = await asyncio.wrap_future(svc.record_impressions(body.model_dump()))
    return write_response(written, rejected)


@router.get("/report", response_model=ImpressionReport, responses=errors())
async def report(
    _: Annotated[Any, Depends(require(Scope.ADMIN))],
    svc: Annotated[ServingService, Depends(service)],
    window_hours: Annotated[float | None, Query(gt=0, le=24 * 90)] = None,
) -> ImpressionReport:
    """Per model version: impressions, clicks, purchases, revenue, CTR and conversion of shown items."""
    hours = window_hours or svc.settings.serve.attribution_hours
    rows = await asyncio.wrap_future(svc.impression_report(hours))
    return ImpressionReport(window_hours=hours, versions=[ImpressionReportRow(**r) for r in rows])
