"""A user's history, export and erasure."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from shopsense.api.deps import require, service
from shopsense.api.errors import ApiError
from shopsense.api.routes.common import PathId, errors
from shopsense.api.schemas import EraseResponse, ErasureModels, ExportResponse, HistoryResponse
from shopsense.services.keys import Scope
from shopsense.services.serving import ServingService

router = APIRouter(prefix="/v1/users", tags=["users"])

UserId = PathId


@router.get("/{user_id}/history", response_model=HistoryResponse, responses=errors(404))
async def history(
    user_id: UserId,
    _: Annotated[Any, Depends(require(Scope.RECOMMEND_READ))],
    svc: Annotated[ServingService, Depends(service)],
    limit: Annotated[int, Query(ge=1, le=10_000, description="newest events first")] = 100,
) -> HistoryResponse:
    """The user's most recent events, newest first."""
    rows = await asyncio.wrap_future(svc.user_history(user_id, limit))
    if rows is None:
        raise ApiError(404, "not_found", f"no user {user_id!r}")
    return HistoryResponse(user_id=user_id, events=rows)


@router.get("/{user_id}/export", response_model=ExportResponse, responses=errors(404))
async def export(
    user_id: UserId,
    _: Annotated[Any, Depends(require(Scope.ADMIN))],
    svc: Annotated[ServingService, Depends(service)],
) -> ExportResponse:
    """Everything stored about a user (their record and every event): a data-subject access request."""
    found = await asyncio.wrap_future(svc.user_export(user_id))
    if found is None:
        raise ApiError(404, "not_found", f"no user {user_id!r}")
    return ExportResponse(user=found.user, events=found.events)


@router.delete("/{user_id}", response_model=EraseResponse, responses=errors(404))
async def erase(
    user_id: UserId,
    _: Annotated[Any, Depends(require(Scope.ADMIN))],
    svc: Annotated[ServingService, Depends(service)],
) -> EraseResponse:
    """Erase a user: events, impressions and record in the store, and all in-memory and cached state.
    Writes queued before this request are erased too; the user never appears in later answers."""
    erased = await asyncio.to_thread(svc.erase_user, user_id)
    if not erased.deleted["users"]:
        raise ApiError(404, "not_found", f"no user {user_id!r}")
    return EraseResponse(user_id=user_id, deleted=erased.deleted, models=ErasureModels(**erased.models))
