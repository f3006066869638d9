"""Model bundles: list, reload (hot swap), roll back and train (a job), and the replicas serving them, for keys
with the admin scope."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, Field

from shopsense.api.deps import require, service, shop_of
from shopsense.api.errors import ApiError
from shopsense.api.routes.common import errors
from shopsense.api.routes.jobs import JobAccepted, Runner, accepted
from shopsense.api.schemas import ModelsResponse, ReplicasResponse
from shopsense.errors import ConfigError
from shopsense.services.keys import Scope
from shopsense.services.model_jobs import TRAIN_JOB, train_work
from shopsense.services.recommendation import pipeline_config
from shopsense.services.serving import ServingService

router = APIRouter(prefix="/v1/admin/models", tags=["admin"])
training = APIRouter(prefix="/v1/models", tags=["admin"])
replicas = APIRouter(prefix="/v1/admin/replicas", tags=["admin"])
Admin = Annotated[Any, Depends(require(Scope.ADMIN))]


def _models(svc: ServingService) -> ModelsResponse:
    name = svc.settings.serve.pipeline
    served = svc.served
    return ModelsResponse(
        serving=served.info.version if served else None,
        pinned=svc.bundles.pinned(name),
        error=svc.model_error,
        versions=svc.bundles.versions(name),
    )


@router.get("", response_model=ModelsResponse, responses=errors())
def models(
    _: Annotated[Any, Depends(require(Scope.ADMIN))], svc: Annotated[ServingService, Depends(service)]
) -> ModelsResponse:
    """The served bundle, the pinned one (if any) and every version on disk, newest first."""
    return _models(svc)


@router.post("/reload", response_model=ModelsResponse, responses=errors())
def reload(
    _: Annotated[Any, Depends(require(Scope.ADMIN))], svc: Annotated[ServingService, Depends(service)]
) -> ModelsResponse:
    """Swap to the pinned or newest bundle now; requests in flight finish on the bundle they started with."""
    svc.reload()
    return _models(svc)


@router.post("/rollback", response_model=ModelsResponse, responses=errors(409))
def rollback(
    _: Annotated[Any, Depends(require(Scope.ADMIN))], svc: Annotated[ServingService, Depends(service)]
) -> ModelsResponse:
    """Pin and serve the version before the current one (undo with `shopsense models pin --latest`)."""
    try:
        svc.rollback()
    except ConfigError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    return _models(svc)


class TrainIn(BaseModel):
    model_config = {"extra": "forbid"}

    pipeline: str | None = Field(None, max_length=200, description="default: the served pipeline (serve.pipeline)")


@training.post("/train", status_code=202, response_model=JobAccepted, responses=errors(400))
async def train(
    _: Admin,
    svc: Annotated[ServingService, Depends(service)],
    jobs: Runner,
    response: Response,
    body: Annotated[TrainIn | None, Body()] = None,
) -> JobAccepted:
    """Start a job training a pipeline on every stored event, then serving the new bundle if it is the served
    pipeline (unless another is pinned). An unknown pipeline is refused here (400). The job's result: pipeline,
    version, seconds, the heads' held-out scores."""
    name = (body.pipeline if body is not None else None) or svc.settings.serve.pipeline
    try:
        pipeline_config(svc.settings, name)
    except ConfigError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc

    return accepted(await asyncio.to_thread(jobs.submit, TRAIN_JOB, train_work(svc, name)), response)


@replicas.get("", response_model=ReplicasResponse, responses=errors())
def replicas_alive(_: Admin, request: Request) -> ReplicasResponse:
    """The servers of this store seen in the last few seconds and the bundle version each serves: every
    replica of a PostgreSQL store, or this one alone with the embedded store."""
    board = shop_of(request).replicas
    return ReplicasResponse(this=board.replica_id, replicas=board.alive())
