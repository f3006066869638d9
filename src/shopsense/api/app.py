"""The FastAPI application factory: routers, authentication, limits, structured errors, metrics.

``create_app(settings)`` builds an app around one :class:`~shopsense.services.shop.Shop`; the store
is opened and the model bundle loaded when the app starts (lifespan), so one process owns the
embedded store for its whole life. Routes reach state only through the shop (``api/deps.py``).
While it runs, one background loop (:class:`~shopsense.services.coordination.Coordinator`) keeps the
served bundle current and, over a shared PostgreSQL store, the replica's heartbeat and rate-limit share.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopsense import __version__
from shopsense.api.auth import Authenticate
from shopsense.api.computing import LiveAnswers
from shopsense.api.deps import RateLimiter
from shopsense.api.docs import add_docs
from shopsense.api.error_bodies import error_body, error_response, invalid_response
from shopsense.api.errors import ApiError
from shopsense.api.event_body import EventReader
from shopsense.api.fast_paths import FastPaths
from shopsense.api.routes import admin, catalog, events, impressions, jobs, marketing, ops, recommendations, users
from shopsense.dashboard import mount_dashboard
from shopsense.domain import TOO_DEEP, Event, Item, User
from shopsense.errors import ShopsenseError, StoreError
from shopsense.services.allocator import Trimmer, limit_arenas
from shopsense.services.coordination import Coordinator
from shopsense.services.shop import Shop
from shopsense.settings import Settings

log = logging.getLogger("shopsense.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Metrics:
    """Prometheus series of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shopsense_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "shopsense_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.accepted = Counter("shopsense_events_accepted_total", "events committed", registry=self.registry)
        self.rejected = Counter("shopsense_events_rejected_total", "events rejected", registry=self.registry)
        self.recs = Counter(
            "shopsense_recommendations_total", "recommendation answers", ["fallback", "cached"], registry=self.registry
        )
        self.held = Gauge(
            "shopsense_memory_held",
            "what the server keeps in memory: cache_entries, cache_bytes, events, events_bytes (set at each scrape)",
            ["what"],
            registry=self.registry,
        )

    def events(self, accepted: int, rejected: int) -> None:
        self.accepted.inc(accepted)
        self.rejected.inc(rejected)

    def recommendation(self, fallback: bool, cached: bool) -> None:
        self.recs.labels(str(fallback).lower(), str(cached).lower()).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by Content-Length or while streaming, before parsing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, "body_too_large", f"request body over {self.limit:,} bytes")
            return message

        await self.app(scope, limited, send)


async def _too_large(limit: int, send: Send) -> None:
    body = JSONResponse(
        error_body("body_too_large", f"request body over {limit:,} bytes (serve.max_body_bytes)"), status_code=413
    )
    await body({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.request", "body": b""}


ROUTERS = (
    *(m.router for m in (events, catalog, recommendations, users, impressions, marketing, admin, jobs, ops)),
    admin.training,  # POST /v1/models/train: outside the admin router's /v1/admin/models
    admin.replicas,
)
"""Every router of the API, in the order the app matches them."""


def create_app(settings: Settings) -> FastAPI:
    """The shopsense REST API over the store and model bundles named by ``settings``."""

    limit_arenas(settings.serve.malloc_arenas)  # before the server's threads take arenas of their own
    shop = Shop(settings, server=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        trimmer = Trimmer(settings.serve.trim_seconds)  # one per run of the app: a thread starts only once
        reader: EventReader | None = None
        coordination: threading.Thread | None = None
        try:
            service = shop.serving()  # opens the store and loads the bundle: one process owns the store
            shop.jobs.start()  # jobs a stopped server left running are marked failed before anyone polls them
            app.state.reader = reader = EventReader(settings, service.checker)
            app.state.live = LiveAnswers(service, settings.serve.live_threads)
            # Everything loaded so far (models, id maps, histories) lives as long as the server: keep it
            # out of the cyclic collector, whose full passes over it stalled requests for a quarter second.
            gc.freeze()
            coordinator = Coordinator(service, shop.replicas, app.state.limiter.share)
            coordinator.tick()  # before the first request: counted among the replicas, on the agreed bundle
            coordination = threading.Thread(target=coordinator.run, args=(stop,), daemon=True, name="coordination")
            coordination.start()
            trimmer.start()
            yield
        finally:
            stop.set()
            trimmer.stop()
            try:
                if coordination is not None:
                    coordination.join()  # a round in flight ends first: it must not beat again after we leave
                    with contextlib.suppress(StoreError):  # the database away: the others stop counting us soon
                        shop.replicas.leave()
                if reader is not None:
                    reader.close()
                shop.close()
            finally:
                # Give the frozen objects back to the collector. Frozen ones are never collected, not
                # even at exit: every module and DuckDB object caught in a reference cycle then outlived
                # DuckDB's nanobind bindings, which printed "nanobind: leaked ..." at every exit.
                gc.unfreeze()

    app = FastAPI(
        title="shopsense",
        version=__version__,
        summary="Recommendations and precision marketing from one event stream.",
        description=(
            "Authenticate with an API key (`shopsense keys create`) as `Authorization: Bearer <key>` or "
            "`X-API-Key: <key>`. Scopes: `events:write`, `recommend:read`, `marketing`, `admin` (everything). Errors "
            "always have the body `{error: {code, message, details}}`."
        ),
        lifespan=lifespan,
        telemetry=None if settings.serve.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # served by add_docs from local files: FastAPI's pages load them from a CDN
        redoc_url=None,
    )
    app.state.shop = shop  # the routes reach every service through it (api/deps.py)
    app.state.limiter = RateLimiter(settings.serve.rate_per_second, settings.serve.rate_burst)
    app.state.metrics = Metrics()
    for router in ROUTERS:
        app.include_router(router)
    add_docs(app)
    mount_dashboard(app)  # the web UI at /: cookie sessions, not API keys; not among `declared` below
    _errors(app)
    declared = [route for router in ROUTERS for route in router.routes]
    app.add_middleware(Authenticate, routes=declared)  # the key before the body, just inside the fast paths
    app.add_middleware(FastPaths, routes=(events.FAST, recommendations.FAST), declared=declared)
    app.add_middleware(Observe, metrics=app.state.metrics)
    if settings.serve.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serve.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=settings.serve.max_body_bytes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


WORKER_SETTINGS = "SHOPSENSE_WORKER_SETTINGS"
"""The variable through which ``shopsense serve --workers N`` hands its resolved settings (JSON) to its workers."""


def worker_app() -> FastAPI:
    """The app of one ``serve --workers`` process (uvicorn's factory): the parent's settings, exactly as resolved.

    uvicorn starts workers by importing the app by name, so the settings the parent built from its file,
    environment and flags cannot be passed as an object; reloading them here could differ (a relative
    ``--config`` path, flags the workers never see).
    """
    return create_app(Settings.model_validate_json(os.environ[WORKER_SETTINGS]))


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(ShopsenseError)
    async def domain_error(request: Request, exc: ShopsenseError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # A body the framework parses itself (marketing routes) nested past the parser's recursion limit.
        return JSONResponse(error_body("invalid_request", f"the body is nested too deeply: {TOO_DEEP}"), 422)


class Observe:
    """Counts requests and their latency per route and status for /metrics.

    Pure ASGI: Starlette's ``BaseHTTPMiddleware`` re-streams every response through a task and
    queue, which cost more than a cached recommendation itself.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, plus the record models the write routes validate item by item."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Event, Item, User):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    app.openapi_schema = schema
    return schema
