"""GET /v1/recommendations and GET /v1/items/{item_id}/similar."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from shopsense.api.deps import require, service
from shopsense.api.errors import ApiError
from shopsense.api.routes.common import errors
from shopsense.api.schemas import RecommendationResponse, SimilarResponse
from shopsense.errors import ConfigError
from shopsense.services.keys import Scope
from shopsense.services.serving import RecAnswer, ServingService

router = APIRouter(prefix="/v1", tags=["recommendations"])

Id = Annotated[str, Query(min_length=1, max_length=256)]


@router.get("/recommendations", response_model=RecommendationResponse, responses=errors(400))
async def recommendations(
    request: Request,
    user_id: Id,
    _: Annotated[Any, Depends(require(Scope.RECOMMEND_READ))],
    svc: Annotated[ServingService, Depends(service)],
    k: Annotated[int, Query(ge=1, le=100, description="how many items")] = 10,
    alpha: Annotated[
        float | None, Query(ge=0, le=1, description="1 = attention only, 0 = purchase x value only")
    ] = None,
    diversity: Annotated[float | None, Query(ge=0, le=1, description="MMR lambda: 1 = off, lower = varied")] = None,
    category: Annotated[list[str] | None, Query(max_length=20, description="only these categories")] = None,
    exclude_category: Annotated[list[str] | None, Query(max_length=20)] = None,
    brand: Annotated[list[str] | None, Query(max_length=20, description="only these brands")] = None,
    min_price: Annotated[float | None, Query(ge=0, le=1e12)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=1e12)] = None,
    channel: Annotated[str | None, Query(max_length=32, description="where it will be shown (recorded)")] = None,
) -> RecommendationResponse | Response:
    """The pipeline's top-k for a user, with scores, both heads' probabilities and a reason for each item.
    A user with no history gets trending items; if no model can answer, trending items with ``fallback`` set.

    A default request for a user whose history is unchanged since training is answered from the bundle's
    precomputed answers, a repeated one from the cache, both on the event loop; everything else is
    computed in the thread pool."""
    rules: dict[str, Any] = {}
    for key, value in (
        ("include_categories", category),
        ("exclude_categories", exclude_category),
        ("include_brands", brand),
        ("min_price", min_price),
        ("max_price", max_price),
    ):
        if value:
            rules[key] = value
    answer = svc.ready(user_id, k, alpha=alpha, diversity=diversity, rules=rules or None)
    if answer is None:
        try:
            answer = await run_in_threadpool(
                svc.recommend, user_id, k, alpha=alpha, diversity=diversity, rules=rules or None
            )
        except ConfigError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from exc
    request.app.state.metrics.recommendation(answer.fallback is not None, answer.cached)
    svc.remember(answer, channel)
    if answer.encoded is not None:  # already JSON: skip building and validating models for it
        return Response(_encoded(answer), media_type="application/json")
    return RecommendationResponse(
        recommendation_id=answer.recommendation_id,
        user_id=user_id,
        model_version=answer.model_version,
        fallback=answer.fallback,
        cached=answer.cached,
        items=answer.items,
    )


def _encoded(answer: RecAnswer) -> bytes:
    """The response body of a precomputed answer (the RecommendationResponse schema, fields in order)."""
    head = json.dumps(
        {
            "recommendation_id": answer.recommendation_id,
            "user_id": answer.user_id,
            "model_version": answer.model_version,
            "fallback": answer.fallback,
            "cached": answer.cached,
        },
        separators=(",", ":"),
    )
    return f'{head[:-1]},"items":[{",".join(answer.encoded or ())}]}}'.encode()


@router.get("/items/{item_id}/similar", response_model=SimilarResponse, responses=errors(404))
def similar(
    item_id: Annotated[str, Path(min_length=1, max_length=256)],
    _: Annotated[Any, Depends(require(Scope.RECOMMEND_READ))],
    svc: Annotated[ServingService, Depends(service)],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SimilarResponse:
    """Items most related to this one ("often bought together"), from the served model."""
    try:
        items = svc.similar(item_id, k)
    except KeyError as exc:
        raise ApiError(404, "not_found", f"item {item_id!r} is not known to the served model") from exc
    except LookupError as exc:
        raise ApiError(404, "not_found", f"no model to answer with: {exc}") from exc
    served = svc.served
    return SimilarResponse(
        item_id=item_id,
        model_version=served.info.version if served else None,
        items=items,
    )
