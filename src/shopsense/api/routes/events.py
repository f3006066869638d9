"""POST /v1/events: one event or a batch, each validated; accepted events are committed before the reply."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from shopsense.api.deps import ApiError, require
from shopsense.api.routes.common import errors
from shopsense.api.schemas import RejectedItem, WriteResponse
from shopsense.services.event_check import Rejected
from shopsense.services.event_rows import Columns
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
async def post_events(request: Request, _: Annotated[Any, Depends(require(Scope.EVENTS_WRITE))]) -> Response:
    """Each event is validated on its own: valid ones are committed (with re-sent ones collapsing by
    ``event_id``, or by content when there is none), invalid ones are listed with the reason. The
    response comes only after the commit, and the next recommendation for these users sees them."""
    return await ingest(request.app.state, await request.body())


async def ingest(state: Any, body: bytes) -> Response:
    """The work of this route once the key is checked: validate, commit, answer. The app's
    ``EventsFastPath`` calls it too, skipping the framework's routing (see there)."""
    svc: ServingService = state.service
    events, rejected = (await run_in_threadpool(_read, svc, body)) if len(body) > THREAD_BYTES else _read(svc, body)
    if events.num_rows:
        await asyncio.wrap_future(svc.submit_events(events))
    state.metrics.events(events.num_rows, len(rejected))
    if rejected:
        return JSONResponse(write_response(events.num_rows, rejected).model_dump())
    return Response(b'{"accepted":%d,"rejected":[]}' % events.num_rows, media_type="application/json")


THREAD_BYTES = 16_384
"""Bodies larger than this (about 50 events) are validated in the thread pool, off the event loop."""


def _read(svc: ServingService, body: bytes) -> tuple[pa.Table | Columns, list[Rejected]]:
    """The body's accepted and rejected events: straight from the bytes when all are valid (nearly
    always), else parsed first so that each event gets its own verdict."""
    parsed = svc.checker.parse(body)
    if parsed is not None and parsed[0].num_rows + len(parsed[1]) <= svc.settings.serve.max_batch:
        return parsed
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"the body is not valid JSON: {exc}") from exc
    return svc.checker.validate(batch(raw, svc.settings.serve.max_batch, "events"))
