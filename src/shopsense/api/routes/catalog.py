"""PUT /v1/items and PUT /v1/users: catalogue and customer upserts, one record or a batch."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from shopsense.api.deps import require, service
from shopsense.api.event_body import batch
from shopsense.api.routes.common import errors
from shopsense.api.routes.events import write_response
from shopsense.api.schemas import WriteResponse
from shopsense.domain import RecordKind
from shopsense.services.keys import Scope
from shopsense.services.serving import ServingService

router = APIRouter(prefix="/v1", tags=["catalogue"])


def _body(model: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model}"}
    schema = {"oneOf": [ref, {"type": "array", "minItems": 1, "items": ref}]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _upsert(svc: ServingService, kind: RecordKind, body: Any) -> WriteResponse:
    raw = batch(body, svc.settings.serve.max_batch, kind.value)
    future, rejected = svc.upsert(kind, raw)
    accepted = 0
    if future is not None:
        await asyncio.wrap_future(future)
        accepted = len(raw) - len(rejected)
    return write_response(accepted, rejected)


@router.put("/items", response_model=WriteResponse, responses=errors(400), openapi_extra=_body("Item"))
async def put_items(
    body: Annotated[Any, Body()],
    _: Annotated[Any, Depends(require(Scope.EVENTS_WRITE))],
    svc: Annotated[ServingService, Depends(service)],
) -> WriteResponse:
    """Insert or update items; a missing field never erases a stored value. Availability and stock
    changes apply to recommendations at once; new items become recommendable after the next training."""
    return await _upsert(svc, RecordKind.ITEMS, body)


@router.put("/users", response_model=WriteResponse, responses=errors(400), openapi_extra=_body("User"))
async def put_users(
    body: Annotated[Any, Body()],
    _: Annotated[Any, Depends(require(Scope.EVENTS_WRITE))],
    svc: Annotated[ServingService, Depends(service)],
) -> WriteResponse:
    """Insert or update users; attributes are merged key by key."""
    return await _upsert(svc, RecordKind.USERS, body)
