"""What every dashboard page depends on: the signed-in viewer, scope checks, and rendering.

Contract (pages rely on it):

- ``Viewer`` (``Annotated[ViewerInfo, Depends(viewer)]``): the signed-in key's record, its session's CSRF
  token and ``can(scope)``. Without a live session a page gets a redirect (303) to ``/signin?next=<path>``;
  a ``fetch`` asking for JSON (``Accept: application/json``) gets 401 instead. On POST/PUT/DELETE it also
  checks the CSRF token (form field ``csrf`` or header ``X-CSRF-Token``): 403 when missing or wrong.
- ``require(scope)``: ``Depends(require(Scope.ADMIN))``: the viewer, or 403 when the key lacks the scope,
  whatever the page showed (a hidden button is no protection). Every route but sign-in/out takes one: reads
  take the API's scope for the same data (``PAGES``: marketing pages ``marketing``, ``/data`` ``admin``, the
  rest ``recommend:read``), actions the scope they need (``Reader``, ``Marketer``, ``Admin`` below).
- ``render(request, "page.html", **context) -> HTMLResponse``: a template of ``dashboard/templates``
  extending ``base.html`` (nav to every page, ``{% block content %}``, optional ``{% block head %}`` and
  ``{% block scripts %}``); every template sees ``viewer`` (None on the sign-in page), ``csrf``,
  ``pages`` (the nav) and ``active`` (the current page's path). Jinja autoescapes.
- State comes from services only, as in the API: ``serving(request)`` (the shop's
  :class:`~shopsense.services.serving.ServingService`, whose writer owns the store in a server: use its
  methods, e.g. ``serving(request).marketing(work)`` for marketing reads, never ``Shop.marketing``) and
  ``shop_of(request)`` (``.jobs`` for long work, ``.keys``, ``.bundles``); both from ``shopsense.api.deps``.
  Blocking work runs off the event loop (``asyncio.wrap_future`` / ``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from shopsense import __version__
from shopsense.api.deps import serving, shop_of
from shopsense.dashboard.session import CSRF_FIELD, CSRF_HEADER, Session, csrf_matches, current
from shopsense.services.insights import Insights
from shopsense.services.keys import KeyRecord, Scope

__all__ = [
    "PAGES",
    "Admin",
    "Forbidden",
    "Marketer",
    "Reader",
    "ScopeCheck",
    "SignInRequired",
    "Viewer",
    "ViewerInfo",
    "checked_csrf",
    "insights",
    "job_json",
    "render",
    "require",
    "serving",
    "shop_of",
    "viewer",
]

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
"""Headers on every page: scripts only from this server (plotly.js evaluates code for some traces)."""
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

PAGES: tuple[tuple[str, str, Scope], ...] = (
    ("/", "Overview", Scope.RECOMMEND_READ),
    ("/customers", "Customers", Scope.MARKETING),
    ("/items", "Items", Scope.RECOMMEND_READ),
    ("/segments", "Segments", Scope.MARKETING),
    ("/audiences", "Audiences", Scope.MARKETING),
    ("/campaigns", "Campaigns", Scope.MARKETING),
    ("/models", "Models", Scope.RECOMMEND_READ),
    ("/data", "Data", Scope.ADMIN),
)
"""The nav: every page's path, title and the scope its reads need (the API's scope for the same data); the
nav shows a key only the pages it can open."""


class SignInRequired(Exception):
    """No live session: the app answers with a redirect to the sign-in page (or 401 to a JSON fetch)."""

    def __init__(self, next_path: str, json: bool) -> None:
        super().__init__(next_path)
        self.next_path, self.json = next_path, json


class Forbidden(Exception):
    """A signed-in viewer may not do this (a missing scope, a missing or wrong CSRF token): 403."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ViewerInfo:
    """Who is signed in: the key's current record and the session's CSRF token."""

    key: KeyRecord
    csrf: str

    @property
    def name(self) -> str:
        return self.key.name

    def can(self, scope: Scope | str) -> bool:
        """Whether the key holds ``scope`` (admin holds every scope)."""
        return self.key.allows(Scope(scope))


async def checked_csrf(request: Request, session: Session) -> None:
    """Refuse (403) an unsafe request without its session's CSRF token (header, else form field)."""
    if request.method not in UNSAFE:
        return
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not csrf_matches(session, presented):
        raise Forbidden("the form's CSRF token is missing or out of date: reload the page and try again")


async def viewer(request: Request) -> ViewerInfo:
    """The signed-in viewer (see the module's contract); also left in ``request.state.viewer`` for templates."""
    found = await current(request)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method in UNSAFE:  # an action's URL is no page to come back to
            target = "/"
        raise SignInRequired(target, "application/json" in request.headers.get("accept", ""))
    session, record = found
    await checked_csrf(request, session)
    info = ViewerInfo(record, session.csrf)
    request.state.viewer = info
    return info


Viewer = Annotated[ViewerInfo, Depends(viewer)]


class ScopeCheck:
    """The dependency :func:`require` makes: the viewer when its key holds ``scope``, else 403 (a class, so a
    test can find every route's scope check)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, who: Viewer) -> ViewerInfo:
        if not who.can(self.scope):
            raise Forbidden(f"your key ({who.key.key_id}) lacks the {self.scope.value!r} scope this needs")
        return who


def require(scope: Scope) -> Any:
    """A dependency admitting only a viewer whose key holds ``scope``: ``Depends(require(Scope.ADMIN))``."""
    return Depends(ScopeCheck(scope))


Reader = Annotated[ViewerInfo, require(Scope.RECOMMEND_READ)]
Marketer = Annotated[ViewerInfo, require(Scope.MARKETING)]
Admin = Annotated[ViewerInfo, require(Scope.ADMIN)]


def insights(request: Request) -> Insights:
    """The operator pages' reads (:class:`~shopsense.services.insights.Insights`) over the app's serving
    service, made on first use (the service starts with the app)."""
    found: Insights | None = getattr(request.app.state, "dashboard_insights", None)
    svc = serving(request)
    if found is None or found.serving is not svc:
        found = request.app.state.dashboard_insights = Insights(svc)
    return found


async def job_json(request: Request, job_id: str, kind: str) -> JSONResponse:
    """A job of ``kind``'s status, progress and result as JSON (pages poll it to draw a progress bar); 404 for
    a job of another kind, so a page shows only its own jobs."""
    found = await asyncio.to_thread(shop_of(request).jobs.get, job_id[:64])
    if found is None or found.kind != kind:
        return JSONResponse({"error": {"code": "not_found", "message": f"no {kind} job {job_id!r}"}}, 404)
    return JSONResponse(
        {
            "job_id": found.job_id,
            "kind": found.kind,
            "status": found.status.value,
            "progress": found.progress,
            "message": found.message,
            "error": found.error,
            "result": json.loads(found.result) if found.result else None,
        }
    )


def sign_in_url(next_path: str) -> str:
    return "/signin?next=" + quote(next_path, safe="/")


def render(request: Request, template_name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A dashboard template rendered with the viewer, the CSRF token and the nav (see the module's contract)."""
    who: ViewerInfo | None = getattr(request.state, "viewer", None)
    base = {
        "viewer": who,
        "csrf": who.csrf if who is not None else "",
        "pages": [(path, title) for path, title, scope in PAGES if who is not None and who.can(scope)],
        "active": request.url.path,
        "version": __version__,
    }
    response = TEMPLATES.TemplateResponse(request, template_name, {**base, **context}, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(SECURITY_HEADERS)
    return response
