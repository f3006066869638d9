"""GET /v1/recommendations and GET /v1/items/{item_id}/similar."""

from __future__ import annotations

import json
from typing import Annotated, Any, get_args, get_origin

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from shopsense.api.computing import LiveAnswers
from shopsense.api.deps import require, service, serving
from shopsense.api.errors import ApiError
from shopsense.api.fast_paths import FastRoute
from shopsense.api.routes.common import PathId, errors
from shopsense.api.schemas import RecommendationQuery, RecommendationResponse, SimilarResponse
from shopsense.errors import ConfigError
from shopsense.services.keys import Scope
from shopsense.services.serving import RecAnswer, ServingService

router = APIRouter(prefix="/v1", tags=["recommendations"])


@router.get("/recommendations", response_model=RecommendationResponse, responses=errors(400))
async def recommendations(
    request: Request,
    query: Annotated[RecommendationQuery, Query()],
    _: Annotated[Any, Depends(require(Scope.RECOMMEND_READ))],
) -> Response:
    """The pipeline's top-k for a user, with scores, both heads' probabilities and a reason for each item.
    A user with no history gets trending items; if no model can answer, trending items with ``fallback`` set.

    A default request for a user whose history is unchanged since training is answered from the bundle's
    precomputed answers, a repeated one from the cache, both on the event loop; everything else is
    computed off it, a few at once (``serve.live_threads``), and concurrent requests for the same answer
    share one computation."""
    return await answer(request, query)


async def handle(request: Request) -> Response:
    """This route once the key is checked: its query parameters read as the framework reads them (the
    last of a repeated one, every one of a list) and validated by the same model, then answered."""
    params = request.query_params
    given = {name: params.getlist(name) if name in _LISTS else params[name] for name in params}
    try:
        query = RecommendationQuery.model_validate(given)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from exc
    return await answer(request, query)


async def answer(request: Request, query: RecommendationQuery) -> Response:
    """A stored or cached answer on the event loop, else one computed off it (:mod:`shopsense.api.computing`)."""
    state = request.app.state
    svc = serving(request)
    rules = query.rules()
    got = svc.ready(query.user_id, query.k, alpha=query.alpha, diversity=query.diversity, rules=rules)
    if got is None:
        live: LiveAnswers = state.live
        try:
            got = await live.answer(query.user_id, query.k, alpha=query.alpha, diversity=query.diversity, rules=rules)
        except ConfigError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from exc
    state.metrics.recommendation(got.fallback is not None, got.cached)
    svc.remember(got, query.channel)
    if got.encoded is not None:  # already JSON: skip building and validating models for it
        return Response(_encoded(got), media_type="application/json")
    body = RecommendationResponse(
        recommendation_id=got.recommendation_id,
        user_id=got.user_id,
        model_version=got.model_version,
        fallback=got.fallback,
        cached=got.cached,
        items=got.items,
    )
    return Response(body.model_dump_json(), media_type="application/json")


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
    item_id: PathId,
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


_LISTS = frozenset(
    name
    for name, field in RecommendationQuery.model_fields.items()
    if any(get_origin(kind) is list for kind in (field.annotation, *get_args(field.annotation)))
)
"""The parameters that may repeat (``category=a&category=b``)."""

FAST = FastRoute("GET", "/v1/recommendations", Scope.RECOMMEND_READ, handle)
"""Answered past the framework's routing (:mod:`shopsense.api.fast_paths`): most of a cached answer's
time went to FastAPI's per-parameter dependency solving."""
