"""POST /v1/events: one event or a batch, each validated; accepted events are committed before the reply."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.concurrency import run_in_threadpool

from shopsense.api.deps import ApiError, require, service
from shopsense.api.routes.common import errors
from shopsense.api.schemas import RejectedItem, WriteResponse
from shopsense.services.keys import Scope
from shopsense.services.serving import ServingService

router = APIRouter(prefix="/v1", tags=["events"])

EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Event"}},
                    ]
                }
            }
        },
    }
}


def batch(body: Any, limit: int, what: str) -> list[Any]:
    """A single object or an array of objects, as a list; over ``limit`` is 413."""
    items = body if isinstance(body, list) else [body]
    if len(items) > limit:
        raise ApiError(413, "batch_too_large", f"{len(items):,} {what} in one request; the limit is {limit:,}")
    if not items:
        raise ApiError(422, "invalid_request", f"the request holds no {what}")
    return items


def write_response(accepted: int, rejected: list[Any]) -> WriteResponse:
    return WriteResponse(
        accepted=accepted, rejected=[RejectedItem(index=r.index, field=r.field, reason=r.reason) for r in rejected]
    )


@router.post(
    "/events",
    response_model=WriteResponse,
    responses=errors(400),
    openapi_extra=EVENTS_BODY,
    summary="Record behaviour events (one, or a batch up to serve.max_batch)",
)
async def post_events(
    request: Request,
    body: Annotated[Any, Body()],
    _: Annotated[Any, Depends(require(Scope.EVENTS_WRITE))],
    svc: Annotated[ServingService, Depends(service)],
) -> WriteResponse:
    """Each event is validated on its own: valid ones are committed (with re-sent ones collapsing by
    ``event_id``, or by content when there is none), invalid ones are listed with the reason. The
    response comes only after the commit, and the next recommendation for these users sees them."""
    raw = batch(body, svc.settings.serve.max_batch, "events")
    table, rejected = await run_in_threadpool(svc.validate_events, raw) if len(raw) > 50 else svc.validate_events(raw)
    if table.num_rows:
        await asyncio.wrap_future(svc.submit_events(table))
    request.app.state.metrics.events(table.num_rows, len(rejected))
    return write_response(table.num_rows, rejected)
