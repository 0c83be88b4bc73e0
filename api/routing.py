"""Declarative routes: one decorator gives a handler its path, access level, body and query types.

The same declarations build the Starlette routes and ``/openapi.json``, so the documentation
cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.routing import Router as StarletteRouter
from starlette.types import Receive, Scope, Send

from api.auth import authenticate
from api.rendering import JSON, convert, decode_body
from api.state import Services
from seatlock.errors import NotAuthenticated, NotFound
from seatlock.tokens import Principal

Access = Literal["public", "optional", "user", "admin"]
MAX_ID = 2**63 - 1


@dataclass(slots=True)
class Call:
    """What a handler receives: the request, parsed and authenticated."""

    request: Request
    services: Services
    principal: Principal | None
    params: dict[str, Any]
    query: Any = None
    body: Any = None

    @property
    def user(self) -> Principal:
        if self.principal is None:
            raise NotAuthenticated("Not authenticated")
        return self.principal


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    tag: str
    status: int = 200
    body: Any = None
    query: Any = None
    response: Any = None
    form: bool = False  # body may also come form-encoded (OAuth2 password flow)
    upload: bool = False  # body is multipart, parsed by the handler

    async def __call__(self, request: Request) -> Response:
        services: Services = request.app.state.services
        principal = await authenticate(request, services, self.access)
        params = dict(request.path_params)
        for name, value in params.items():
            if isinstance(value, int) and value > MAX_ID:
                raise NotFound(f"{name.removesuffix('_id').capitalize()} not found")
        call = Call(request, services, principal, params)
        if self.query is not None:
            call.query = convert(dict(request.query_params), self.query)
        if self.body is not None and not self.upload:
            call.body = await _read_body(request, self.body, self.form)
        result = await self.handler(call)
        if isinstance(result, Response):
            return result
        if self.status == 204:
            return Response(status_code=204)
        return JSON(result, status_code=self.status)


async def _read_body(request: Request, kind: Any, form: bool) -> Any:
    content_type = request.headers.get("content-type", "")
    if form and content_type.startswith(("application/x-www-form-urlencoded", "multipart/")):
        async with request.form() as data:
            return convert({k: v for k, v in data.items() if isinstance(v, str)}, kind)
    return decode_body(await request.body(), kind)


@dataclass
class Router:
    """A group of endpoints under one OpenAPI tag."""

    tag: str
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self, method: str, path: str, *, access: Access = "public", summary: str = "", **extra: Any
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            text = summary or (handler.__doc__ or handler.__name__).strip().splitlines()[0]
            self.endpoints.append(Endpoint(method, path, handler, access, text, self.tag, **extra))
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


def starlette_routes(endpoints: list[Endpoint]) -> list[Route]:
    """One Route per path (methods merged), plus the path without/with its trailing slash."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for ep in endpoints:
        methods = by_path.setdefault(ep.path, {})
        if ep.method in methods:
            raise ValueError(f"duplicate route {ep.method} {ep.path}")
        methods[ep.method] = ep
    routes: list[Route] = []
    for path, methods in by_path.items():
        dispatch = _dispatcher(methods)
        routes.append(Route(path, dispatch, methods=list(methods)))
        alias = path.rstrip("/") if path.endswith("/") and path != "/" else path + "/"
        if alias not in by_path:
            routes.append(Route(alias, dispatch, methods=list(methods), include_in_schema=False))
    return routes


def _dispatcher(methods: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    if len(methods) == 1:
        return next(iter(methods.values())).__call__

    async def dispatch(request: Request) -> Response:
        return await methods[request.method if request.method != "HEAD" else "GET"](request)

    return dispatch


class ExactRouter(StarletteRouter):
    """Starlette's router, with a dict lookup for paths without parameters before the scan.

    Starlette tries every route's regex in order. A path with no parameters is found in one
    lookup instead, when no earlier route could match it (so the scan would pick the same route)
    and the method is allowed; anything else (405s, parameters, websockets, a root_path) takes
    the scan.
    """

    def __init__(self, routes: list[BaseRoute], **kw: Any) -> None:
        super().__init__(routes, **kw)
        self.exact = exact_routes(self.routes)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.exact.get(scope["path"])
            if route is not None and route.methods and scope["method"] in route.methods:
                scope.setdefault("router", self)
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)


def exact_routes(routes: list[BaseRoute]) -> dict[str, Route]:
    """Parameterless HTTP routes that the in-order scan would reach first for their path."""
    exact: dict[str, Route] = {}
    earlier: list[Route | Mount] = []
    for route in routes:
        if isinstance(route, WebSocketRoute):
            continue  # never matches an HTTP request
        if not isinstance(route, Route | Mount):
            break  # unknown matching rules: leave the rest to the scan
        shadowed = any(r.path_regex.match(route.path) for r in earlier)
        if isinstance(route, Route) and not route.param_convertors and not shadowed:
            exact[route.path] = route
        earlier.append(route)
    return exact
