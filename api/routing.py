"""What a route is: method, path, handler, who may call it, its lane, and what it reads and
answers.

The route table (``api.routes``) is the one source of what is served: the router, the role
check, the admission lanes (``api.limits``) and /openapi.json are all made from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from api.keys import ROUTE_LANES, ROUTE_ROLES
from api.limits import Lane

HEAD_SUFFIX = "_head"


@dataclass(frozen=True)
class Media:
    """An answer that is not a JSON model: its content type and schema."""

    content_type: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    more_types: tuple[str, ...] = ()  # other content types the same answer may have

    @property
    def content_types(self) -> tuple[str, ...]:
        return (self.content_type, *self.more_types)


@dataclass(frozen=True)
class Link:
    """An OpenAPI link from a route's successful answer to the call it enables (the next step
    of a story: open an account, deposit, purchase, ...). Values are runtime expressions such
    as ``$response.body#/id`` or ``$request.path.username``; ``body`` fills fields of the next
    call's body."""

    target: str  # the next route's name (its handler's name, the operationId)
    parameters: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    roles: frozenset[str] | None  # None: served without a token
    summary: str
    tag: str
    answers: Mapping[int, type[BaseModel] | Media]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    problems: tuple[int, ...] = ()  # beyond those every route of its kind can answer
    links: tuple[Link, ...] = ()  # from every 2xx answer
    heavy: bool = False  # a GET that reads much (the log, the journal, reports): its own lane

    def __post_init__(self) -> None:
        if self.heavy and self.is_write:
            raise ValueError(f"{self.method} {self.path}: a write is in the write lane")

    @property
    def name(self) -> str:
        return self.handler.__name__

    @property
    def lane(self) -> Lane:
        """Where the route's calls wait for a worker: every POST changes the ledger (write);
        a GET is a plain read unless marked heavy."""
        if self.is_write:
            return Lane.WRITE
        return Lane.HEAVY if self.heavy else Lane.READ

    @property
    def is_write(self) -> bool:
        return self.method == "POST"


async def _continue_later(request: web.Request) -> None:
    """aiohttp's own answers ``Expect: 100-continue`` with ``100 Continue`` before any
    middleware, so a client without a token, or with a body over the limit, would send it
    anyway. ``api.parsing.body`` answers it once the request is let through. Another
    expectation is ignored (RFC 9110 10.1.1 lets a server do so)."""


def register(app: web.Application, routes: Sequence[Route]) -> None:
    """Every route of the table, and HEAD beside every GET (RFC 9110 9.3.2: the GET's answer
    without its body), under the same roles and in the same lane as the GET."""
    names = [route.name for route in routes]
    if len(set(names)) != len(names):
        raise ValueError("two routes share a handler name")
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler, name=route.name,
                             expect_handler=_continue_later)
    app[ROUTE_ROLES] = {route.name: route.roles for route in routes}
    app[ROUTE_LANES] = {route.name: route.lane for route in routes}
    for route in routes:
        if route.method == "GET":
            name = f"{route.name}{HEAD_SUFFIX}"
            app.router.add_route("HEAD", route.path, route.handler, name=name,
                                 expect_handler=_continue_later)
            app[ROUTE_ROLES][name] = route.roles
            app[ROUTE_LANES][name] = route.lane
