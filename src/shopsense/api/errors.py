"""The API's refusals: an HTTP status with a structured body.

Apart from :mod:`shopsense.api.deps` so that the process reading large event bodies
(:mod:`shopsense.api.event_body`) can raise them without importing the serving stack.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP error with a structured body (see :class:`shopsense.api.schemas.ErrorBody`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.headers = headers

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole, so that one raised in the reading process arrives with its status and code."""
        return ApiError, (self.status, self.code, self.message, self.details, self.headers)
