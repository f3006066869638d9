"""The structured bodies of refused requests, ``{error: {code, message, details}}``, as responses.

Shared by the app's exception handlers and by :mod:`shopsense.api.fast_paths`, which answers its
routes without the framework and must refuse them in exactly the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse

from shopsense.api.errors import ApiError
from shopsense.errors import ShopsenseError, StoreUnavailable

RETRY_AFTER_S = 1
"""Seconds a client is asked to wait before sending again a request the store could not take for now."""


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or []}}


def error_response(exc: ApiError | ShopsenseError) -> JSONResponse:
    """An ApiError with its status, a store failing for now as 503 (send again), any other domain error as 400."""
    if isinstance(exc, ApiError):
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status, headers=exc.headers)
    if isinstance(exc, StoreUnavailable):
        return JSONResponse(error_body("store_unavailable", str(exc)), 503, headers={"Retry-After": str(RETRY_AFTER_S)})
    return JSONResponse(error_body("invalid_request", str(exc)), 400)


def invalid_response(errors: Sequence[Any]) -> JSONResponse:
    """422 for pydantic-style errors (``loc`` and ``msg`` each), the first five summed up in the message."""
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "invalid")} for e in errors
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]) or "invalid request"
    return JSONResponse(error_body("invalid_request", message, details), 422)
