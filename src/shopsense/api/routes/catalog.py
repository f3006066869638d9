"""PUT /v1/items and PUT /v1/users: catalogue and customer upserts, one record or a batch."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from shopsense.api.deps import require, service
from shopsense.api.event_body import load, one_refused
from shopsense.api.routes.common import errors
from shopsense.api.routes.events import write_response
from shopsense.api.schemas import WriteResponse
from shopsense.domain import TOO_DEEP, RecordKind
from shopsense.services.event_check import Rejected
from shopsense.services.keys import Scope
from shopsense.services.serving import ServingService

router = APIRouter(prefix="/v1", tags=["catalogue"])


def _body(model: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model}"}
    schema = {"oneOf": [ref, {"type": "array", "minItems": 1, "items": ref}]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _upsert(svc: ServingService, kind: RecordKind, request: Request) -> WriteResponse:
    """Validate and write the records of the body, each on its own; JSON nested too deep is refused
    whether the parser reads it (the models) or not (see :func:`shopsense.api.event_body.load`)."""
    raw, deep = load(await request.body(), svc.settings.serve.max_batch, kind.value)
    kept = [i for i in range(len(raw)) if i not in deep]
    future, rejected = svc.upsert(kind, [raw[i] for i in kept]) if kept else (None, [])
    if rejected and not (await request.body()).lstrip().startswith(b"["):
        raise one_refused(rejected[0])  # one record: its refusal is the request's
    refused = [Rejected(kept[r.index], r.reason, r.field) for r in rejected]
    refused += [Rejected(i, TOO_DEEP, field) for i, field in deep.items()]
    accepted = 0
    if future is not None:
        await asyncio.wrap_future(future)
        accepted = len(kept) - len(rejected)
    return write_response(accepted, sorted(refused, key=lambda r: r.index))


@router.put("/items", response_model=WriteResponse, responses=errors(400), openapi_extra=_body("Item"))
async def put_items(
    request: Request,
    _: Annotated[Any, Depends(require(Scope.EVENTS_WRITE))],
    svc: Annotated[ServingService, Depends(service)],
) -> WriteResponse:
    """Insert or update items; a missing field never erases a stored value. Availability and stock
    changes apply to recommendations at once; new items become recommendable after the next training."""
    return await _upsert(svc, RecordKind.ITEMS, request)


@router.put("/users", response_model=WriteResponse, responses=errors(400), openapi_extra=_body("User"))
async def put_users(
    request: Request,
    _: Annotated[Any, Depends(require(Scope.EVENTS_WRITE))],
    svc: Annotated[ServingService, Depends(service)],
) -> WriteResponse:
    """Insert or update users; attributes are merged key by key."""
    return await _upsert(svc, RecordKind.USERS, request)
