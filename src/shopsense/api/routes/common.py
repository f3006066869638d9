"""What every protected route may answer besides success, for the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator

from shopsense.api.schemas import ErrorResponse
from shopsense.domain import ID_PATTERN, checked_id

PathId = Annotated[
    str, Path(min_length=1, max_length=256, json_schema_extra={"pattern": ID_PATTERN}), AfterValidator(checked_id)
]
"""An id or name in a path, under the rule of ids in bodies: a control, bidi or zero-width character is
a 422 naming the parameter, and the id is read in Unicode NFC (so a composed and a decomposed "café" are one)."""

_DESCRIPTIONS = {
    400: "the request is well-formed but cannot be done (e.g. a rule names an unknown field)",
    401: "no API key, or an unknown or revoked one",
    403: "the key lacks the scope this route needs",
    404: "no such user, item or model",
    409: "the request conflicts with the current state",
    413: "the body is larger than serve.max_body_bytes or the batch larger than serve.max_batch",
    422: "a parameter or the body is invalid; details say which field",
    429: "the key is over its rate limit; see Retry-After",
    503: "the service is not ready (no model to answer with)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error statuses, plus the ones every keyed route can give."""
    wanted = sorted({401, 403, 413, 422, 429, *codes})
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in wanted}
