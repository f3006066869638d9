"""POST /v1/events: one event or a batch, each validated; accepted events are committed before the reply."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from shopsense.api.deps import require, serving
from shopsense.api.event_body import EventReader
from shopsense.api.fast_paths import FastRoute
from shopsense.api.routes.common import errors
from shopsense.api.schemas import RejectedItem, WriteResponse
from shopsense.services.keys import Scope

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
async def post_events(request: Request, _: Annotated[Any, Depends(require(Scope.EVENTS_WRITE))]) -> Response:
    """Each event is validated on its own: valid ones are committed (with re-sent ones collapsing by
    ``event_id``, or by content when there is none), invalid ones are listed with the reason. The
    response comes only after the commit, and the next recommendation for these users sees them."""
    return await handle(request)


async def handle(request: Request) -> Response:
    """The work of this route once the key is checked: validate, commit, answer."""
    state = request.app.state
    svc = serving(request)
    reader: EventReader = state.reader
    events, rejected = await reader.read(await request.body())
    if events.num_rows:
        await asyncio.wrap_future(svc.submit_events(events))
    state.metrics.events(events.num_rows, len(rejected))
    if rejected:
        return JSONResponse(write_response(events.num_rows, rejected).model_dump())
    return Response(b'{"accepted":%d,"rejected":[]}' % events.num_rows, media_type="application/json")


FAST = FastRoute("POST", "/v1/events", Scope.EVENTS_WRITE, handle)
"""Answered past the framework's routing (:mod:`shopsense.api.fast_paths`): single events are the
busiest traffic a shop sends."""
