"""Operational probes: liveness, readiness and Prometheus metrics (no key needed; bind to a private address)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from shopsense.api.deps import service
from shopsense.api.schemas import Health, Ready
from shopsense.services.serving import ServingService

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health)
def health() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready, "description": "no model loaded"}})
def ready(svc: Annotated[ServingService, Depends(service)]) -> Response:
    """Ready when a model bundle is loaded (before that, recommendations fall back to trending items)."""
    served = svc.served
    body = Ready(
        ready=served is not None, model_version=served.info.version if served else None, detail=svc.model_error
    )
    return JSONResponse(body.model_dump(), status_code=200 if served else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
def metrics(request: Request, svc: Annotated[ServingService, Depends(service)]) -> Response:
    """Request counts and latencies per route, events accepted/rejected, recommendations by fallback/cache,
    answers cached and events held in memory."""
    for what, value in svc.held().items():
        request.app.state.metrics.held.labels(what).set(value)
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
