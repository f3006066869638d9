"""What the marketing pages (segments, audiences, campaigns) share: marketing work on the server's reader,
its errors as messages a page shows, and CSV downloads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response

from shopsense.dashboard.deps import serving
from shopsense.errors import ShopsenseError
from shopsense.services.marketing import MarketingService

T = TypeVar("T")


async def marketing(request: Request, work: Callable[[MarketingService], T]) -> T:
    """Run marketing work through the serving service (its reader, never the writer), off the event loop."""
    return await asyncio.wrap_future(serving(request).marketing(work))


async def attempt(request: Request, work: Callable[[MarketingService], T]) -> tuple[T | None, str | None]:
    """Marketing work and its answer, or None and what went wrong in words (no profiles yet, a bad
    expression): a page shows the message where the answer would be."""
    try:
        return await marketing(request, work), None
    except ShopsenseError as exc:
        return None, str(exc)


def csv_download(body: bytes, filename: str) -> Response:
    """A CSV file the browser saves as ``filename``."""
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}", "Cache-Control": "no-store"},
    )
