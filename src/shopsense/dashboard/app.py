"""Mounting the dashboard on the API's app: pages, sign-in, static assets and their error pages.

Contract for every page (``dashboard/pages/<page>.py``), so helpers can build pages side by side:

- ``router = APIRouter()`` with its routes under its own path (``/customers``, ``/customers/{id}``, …);
  :func:`mount_dashboard` includes the routers of :data:`PAGE_MODULES`, in that order.
- Each route takes the scope check its reads or actions need (``who: Reader``, ``Marketer`` or ``Admin``, or
  ``Depends(require(Scope.X))``: ``dashboard/deps.py``; ``PAGES`` there names each page's scope), and
  answers ``render(request, "<page>.html", **context)``; the template extends ``base.html``.
- Pages reach state through services only (see ``dashboard/deps.py``), never SQL or model code.
- Plots: ``dashboard/charts.py``. Browser JS: put the page's script in ``dashboard/static/<page>.js`` and
  load it in ``{% block scripts %}``; no inline scripts or ``on…=`` handlers (the pages' Content-Security-Policy
  refuses them: ``deps.SECURITY_HEADERS``), no CDN, no external fonts.
- Forms post with ``<input type="hidden" name="csrf" value="{{ csrf }}">``; ``fetch`` sends the header
  ``X-CSRF-Token`` (``base.html`` puts the token in ``<meta name="csrf-token">``).

The dashboard's paths are not API routes: the API's key middleware (``api/auth.py``) checks only routes that
declare a key dependency, and its fast paths only ``/v1`` routes; dashboard pages authenticate by cookie.
"""

from __future__ import annotations

from pathlib import Path

import plotly
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from shopsense.dashboard import session
from shopsense.dashboard.deps import Forbidden, SignInRequired, render, sign_in_url
from shopsense.dashboard.pages import audiences, campaigns, customers, data, items, models, overview, segments
from shopsense.dashboard.session import SessionBook

STATIC = Path(__file__).with_name("static")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
"""The plotly.js the installed ``plotly`` package ships: served as ``/static/plotly.min.js``."""

PAGE_MODULES = (overview, customers, items, segments, audiences, campaigns, models, data)
"""The page modules (``shopsense.dashboard.pages``), in nav order."""


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard from ``app`` (built by :func:`shopsense.api.app.create_app`, whose ``state.shop``
    the pages use): sessions, sign-in, every page present, ``/static`` and the dashboard's error answers."""
    settings = app.state.shop.settings
    app.state.dashboard_sessions = SessionBook(settings.dashboard.session_hours)
    app.include_router(session.router)
    for module in PAGE_MODULES:
        app.include_router(module.router, include_in_schema=False)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        if exc.json:
            return JSONResponse({"error": {"code": "unauthenticated", "message": "sign in again"}}, 401)
        return RedirectResponse(sign_in_url(exc.next_path), status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": {"code": "forbidden", "message": exc.message}}, 403)
        return render(request, "forbidden.html", status_code=403, message=exc.message)


__all__ = ["PAGE_MODULES", "mount_dashboard"]
