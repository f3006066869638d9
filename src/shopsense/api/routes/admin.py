"""Model bundles: list, reload (hot swap) and roll back, for keys with the admin scope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from shopsense.api.deps import require, service
from shopsense.api.errors import ApiError
from shopsense.api.routes.common import errors
from shopsense.api.schemas import ModelsResponse
from shopsense.errors import ConfigError
from shopsense.services.keys import Scope
from shopsense.services.serving import ServingService

router = APIRouter(prefix="/v1/admin/models", tags=["admin"])


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
