"""The API key checked before any work: before the framework reads, parses or validates a body.

FastAPI reads and validates a route's body before it solves the route's dependencies, so with the
key check a dependency alone, a keyless request could make the server read and parse 16 MB (and
get a 422 rather than a 401): two threads sending such bodies without a key slowed every keyed
request. :class:`Authenticate` sits just inside the fast paths: it finds the route the framework
will match, takes the scope that route declares (its :class:`~shopsense.api.deps.Required`
dependency), checks the key with that same dependency (off the event loop when keys live in a
database) and refuses with its body, never reading the request's body; an admitted request goes
on with its key record in the scope, where the route's dependency finds it instead of checking again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match

from shopsense.api.deps import CHECKED, Required
from shopsense.api.error_bodies import error_response
from shopsense.api.errors import ApiError
from shopsense.errors import ShopsenseError


class Authenticate:
    """Checks the key of every request to a route that requires one, before the app reads its body."""

    def __init__(self, app: Any, routes: list[BaseRoute]) -> None:
        self.app, self.routes = app, routes  # the routers' routes, in the order the app includes them
        self.required = {
            id(route): required
            for route in routes
            if isinstance(route, APIRoute) and (required := next(_required(route.dependant), None)) is not None
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        found = self._matched(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, required = found
        try:
            scope[CHECKED] = await required.check(Request(scope, _unread))
        except (ApiError, ShopsenseError) as exc:
            scope["route"] = route  # the metrics label
            await error_response(exc)(scope, _unread, send)
            return
        await self.app(scope, receive, send)

    def _matched(self, scope: dict[str, Any]) -> tuple[BaseRoute, Required] | None:
        """The route the framework's router will run for this request and its key dependency, if it has one.

        The router runs the first route matching both path and method; a path matched only with another
        method (a 405) or no route at all (a 404) needs no key, as before.
        """
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                required = self.required.get(id(route))
                return None if required is None else (route, required)
        return None


def _required(dependant: Dependant) -> Iterator[Required]:
    """The key dependencies of a route, depth first (a route declares one)."""
    for sub in dependant.dependencies:
        if isinstance(sub.call, Required):
            yield sub.call
        yield from _required(sub)


async def _unread() -> dict[str, Any]:
    raise AssertionError("the key is checked before the body is read")  # pragma: no cover
