"""The busiest routes handed straight to their handlers, past FastAPI's routing and dependency solving.

For a single event or a cached recommendation, FastAPI's route matching and its per-parameter
dependency solving cost more than the work itself (two thirds of a cached recommendation's time
in the app, profiled). :class:`FastPaths` sits inside the metrics, CORS and body-limit middleware,
checks the key with the same dependency the route declares, runs the route's own handler and
refuses with the same bodies; any other request goes on to the app. The routes stay declared, for
the schema and the docs, and call the same handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

from shopsense.api.deps import require
from shopsense.api.error_bodies import error_response, invalid_response
from shopsense.api.errors import ApiError
from shopsense.errors import ShopsenseError
from shopsense.services.keys import Scope as KeyScope

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class FastRoute:
    """A route's method and path, the key scope it needs, and its work once the key is checked."""

    method: str
    path: str
    scope: KeyScope
    handle: Handler


class FastPaths:
    """Answers the given routes without the framework (see the module's docstring)."""

    def __init__(self, app: Any, routes: Iterable[FastRoute], declared: Iterable[Any]) -> None:
        by_path = {(m, r.path): r for r in declared if isinstance(r, APIRoute) for m in r.methods or ()}
        self.app = app
        self.routes = {(f.method, f.path): (by_path[f.method, f.path], require(f.scope), f.handle) for f in routes}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Behind a proxy prefix (root_path) the framework's routing decides what a path means.
        plain = scope["type"] == "http" and not scope.get("root_path")
        fast = self.routes.get((scope["method"], scope["path"])) if plain else None
        if fast is None:
            await self.app(scope, receive, send)
            return
        route, check, handle = fast
        scope["route"] = route  # the metrics label
        request = Request(scope, receive)
        response: Response
        try:
            await check(request)
            response = await handle(request)
        except (ApiError, ShopsenseError) as exc:
            response = error_response(exc)
        except RequestValidationError as exc:
            response = invalid_response(exc.errors())
        await response(scope, receive, send)
