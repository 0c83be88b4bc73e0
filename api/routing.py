"""Declarative routes: one decorator gives a handler its path, access level, body and query types.

The same declarations build the Starlette routes and ``/openapi.json``, so the documentation
cannot drift from what is served. An endpoint is a plain ASGI app: it reads what it needs straight
from the ASGI scope (bearer token, query string, JSON body), maps errors to responses itself and
sends JSON without building a Request or a Response. ``App``'s router (``FastRouter``) finds the
endpoint of a known route without Starlette's scan, inside the same middleware stack as every
other request.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec
from starlette.applications import Starlette
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.routing import Router as StarletteRouter
from starlette.types import Lifespan, Message, Receive, Scope, Send

from api.answercache import Flight, send_answer, shared_answers
from api.auth import authenticate, bearer_token
from api.caching import (
    Caching,
    Reply,
    cache_headers,
    merged,
    send_not_modified,
    send_validated,
)
from api.errors import error_reply, error_response
from api.rendering import MAX_BODY_BYTES, Encoded, convert, decode_body, dumps
from seatlock.accounts.tokens import Principal
from seatlock.errors import (
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    SeatLockError,
    UnsupportedMedia,
)
from seatlock.services.container import Services

logger = logging.getLogger(__name__)

Access = Literal["public", "optional", "user", "admin"]
MAX_ID = 2**63 - 1
ID_DIGITS = len(str(MAX_ID))  # the most digits an id has: int() refuses past 4,300


class BoundedInt(IntegerConvertor):
    """Starlette's ``int`` path convertor, for digits of any length.

    Starlette's converts with ``int()``, which refuses a string of more than 4,300 digits
    (Python's guard against quadratic conversion): anyone could get a 500 by asking for such an
    id. A value longer than any id is read as MAX_ID + 1 instead, which the handlers answer as
    the ids above MAX_ID: not found.
    """

    def convert(self, value: str) -> int:
        return int(value) if len(value) <= ID_DIGITS else MAX_ID + 1


# Registered under ``int`` before any route is made (a route compiles its convertors then), so
# every ``{name:int}`` of the API and of its WebSocket routes uses it.
register_url_convertor("int", BoundedInt())

MAX_SCANNED = 4096  # parameterised paths whose scan result is kept (emptied when full)
# A longer path is scanned every time rather than kept: the API's own are a few dozen bytes, and
# a path parameter that takes any text (a profile picture's name) let anyone fill the table with
# request heads of up to 64 KB (~470 MB a process).
MAX_SCANNED_PATH = 256
JSON_HEADERS = (b"content-type", b"application/json")


@dataclass(slots=True)
class Call:
    """What a handler receives: the request, parsed and authenticated."""

    scope: Scope
    receive: Receive
    services: Services
    principal: Principal | None
    params: dict[str, Any]
    query: Any = None
    body: Any = None
    _request: Request | None = None

    @property
    def user(self) -> Principal:
        if self.principal is None:
            raise NotAuthenticated("Not authenticated")
        return self.principal

    @property
    def request(self) -> Request:
        """Starlette's view of the request, built on first use (uploads, forms, the peer)."""
        if self._request is None:
            self._request = Request(self.scope, self.receive)
        return self._request


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route's declaration, and the ASGI app that serves it."""

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
    optional_body: bool = False  # an empty body is no body (call.body None), not a 422
    # Refusals beyond those every endpoint of its kind can give (api/openapi.py error_statuses:
    # 401, 403, 404 on a path id, 400/413/422 on a body, 422 on a query, 503): documentation only.
    errors: tuple[int, ...] = ()
    # GET only: 200s carry a strong ETag, If-None-Match gets a 304, Cache-Control as declared.
    cache: Caching | None = None

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, flight: Flight | None = None
    ) -> None:
        """Serve one request; ``flight``: the answer cache's computation this one makes."""
        if self.cache is not None and flight is None:
            answers = shared_answers(scope)
            if answers is not None:  # an anonymous catalog read (api/answercache.py)
                await answers.serve(scope, send, functools.partial(self, scope, receive, send))
                return
        result: Response | bytes | None  # None: the 204 of a handler with nothing to send
        try:
            # The handler is awaited here, not in a helper: a refusal it raises (409 on a taken
            # seat, the common answer on release day) unwinds one frame less.
            result = await self.handler(await self._call(scope, receive))
            if isinstance(result, Encoded):
                if isinstance(result, Reply):
                    await send_reply(send, result)
                    return
                result = result.body
            elif not isinstance(result, Response):
                result = None if self.status == 204 else dumps(result)
        except SeatLockError as exc:
            status, headers, body = error_reply(exc)
            await send_json(send, status, body, headers)
            return
        except Exception as exc:
            result = await error_response(Request(scope, receive), exc)
        if self.cache is not None and result is not None:
            await self._send_cached(scope, receive, send, result, flight)
        elif isinstance(result, bytes):
            await send_json(send, self.status, result)
        elif result is None:
            await send_no_content(send)
        else:
            await result(scope, receive, send)

    async def _send_cached(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        result: Response | bytes,
        flight: Flight | None,
    ) -> None:
        """A 200 with its ETag and caching headers, or a 304; anything else as it is. A 200
        of a ``flight`` is kept and shared by the answer cache."""
        assert self.cache is not None
        caching = cache_headers(scope, self.cache, by_caller=self.access != "public")
        if isinstance(result, bytes):
            status, body, headers = self.status, result, [JSON_HEADERS, *caching]
        elif result.status_code == 200 and result.background is None:
            # A route's own Cache-Control (a signed-in search: no-store) wins over the default.
            own = [h for h in result.raw_headers if h[0] != b"content-length"]
            status, body, headers = 200, bytes(result.body), merged(own, caching)
        else:
            await result(scope, receive, send)
            return
        answer = None if flight is None else flight.keep(status, body, headers)
        if answer is not None:
            await send_answer(scope, send, answer)
        else:
            await send_validated(scope, send, status, body, headers)

    async def _call(self, scope: Scope, receive: Receive) -> Call:
        """The request, authenticated and parsed as the handler receives it."""
        services: Services = scope["app"].state.services
        principal = await authenticate(bearer_token(scope["headers"]), services, self.access)
        scope["user_id"] = None if principal is None else principal.user_id  # the access log
        params: dict[str, Any] = scope.get("path_params") or {}
        for name, value in params.items():
            if isinstance(value, int) and value > MAX_ID:
                raise NotFound(f"{name.removesuffix('_id').capitalize()} not found")
        call = Call(scope, receive, services, principal, params)
        if self.query is not None:
            call.query = query_of(scope, self.query)
        if self.body is not None and not self.upload:
            if self.form:
                call.body = await _read_form_or_json(call, self.body)
            else:  # JSON, read here: one coroutine less for every hold attempt
                raw = await read_body(receive)
                if self.optional_body and (not raw or raw.isspace()):
                    return call
                if not json_media(scope["headers"]):
                    raise UnsupportedMedia(NOT_JSON)
                call.body = decode_body(raw, self.body)
        return call


async def send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [JSON_HEADERS, (b"content-length", b"%d" % len(body))]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_reply(send: Send, reply: Reply) -> None:
    """A reply that brings its own headers (a seat map: ETag, coding), or its 304."""
    headers = reply.headers
    if reply.status == 304:
        await send_not_modified(send, headers)
        return
    start = [JSON_HEADERS, (b"content-length", b"%d" % len(reply.body)), *headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": start})
    await send({"type": "http.response.body", "body": reply.body})


async def send_no_content(send: Send) -> None:
    """A 204 as Starlette's ``Response(status_code=204)`` sends it: no headers, an empty body."""
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def query_of(scope: Scope, kind: Any) -> Any:
    """The query parameters as ``kind``; with no query string, a frozen kind's defaults are made
    once and shared (a seat map read, a hot path, pays no conversion for a flag it rarely has)."""
    if not scope.get("query_string"):
        shared = _defaults(kind)
        if shared is not None:
            return shared
    return convert(query_params(scope), kind)


@functools.cache
def _defaults(kind: Any) -> Any:
    """``kind`` with every field at its default when it is a frozen Struct that has them all."""
    config = getattr(kind, "__struct_config__", None)
    if config is None or not config.frozen:
        return None
    try:
        return msgspec.convert({}, type=kind)
    except msgspec.ValidationError:  # a required parameter: every request converts (a 422)
        return None


def query_params(scope: Scope) -> dict[str, str]:
    """The query string as Starlette reads it (the last of repeated names wins)."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    # Nothing to unquote (e.g. "seat_ids=41,42" of a cancel): what parse_qsl does, minus its
    # generic work. A part without "=" is a name with an empty value; empty parts are skipped.
    params: dict[str, str] = {}
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            params[name] = value
    return params


async def _read_form_or_json(call: Call, kind: Any) -> Any:
    request = call.request
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/")):
        # Read whole first, as a JSON body is: 413 past MAX_BODY_BYTES. Starlette's parser
        # alone takes up to 1,000 fields of 1 MiB each (a 41 MB login form was read in full).
        raw = await read_body(call.receive)

        async def replay() -> Message:
            return {"type": "http.request", "body": raw, "more_body": False}

        form = Request(call.scope, replay).form(max_files=0, max_fields=MAX_FORM_FIELDS)
        async with form as data:
            fields = {k: v for k, v in data.items() if isinstance(v, str)}
            return convert(fields, kind, ("body",))
    if not json_media(call.scope["headers"]):
        raise UnsupportedMedia(NOT_JSON_OR_FORM)
    return decode_body(await read_body(call.receive), kind)


MAX_FORM_FIELDS = 100  # a form body's (OAuth2's password form has a handful)
NOT_JSON = "Content-Type must be application/json"
NOT_JSON_OR_FORM = f"{NOT_JSON} or application/x-www-form-urlencoded"


def json_media(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a body may be read as JSON: its Content-Type is application/json or a ``+json``
    type, or it has none (read as JSON, as FastAPI reads it). Any other type is refused rather
    than read as JSON anyway: a page on another site may send text/plain without asking the
    browser's CORS preflight, never application/json."""
    for name, value in headers:
        if name == b"content-type":
            media = value.partition(b";")[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return True


async def read_body(receive: Receive) -> bytes:
    """The whole request body; 413 past MAX_BODY_BYTES without reading the rest."""
    message: Message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the usual case: the body in one message
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge("Request body is too large")
        return body
    return await _read_chunks(receive, message)


async def _read_chunks(receive: Receive, message: Message) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] != "http.request":  # the client went away
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge("Request body is too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
        message = await receive()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass
class Router:
    """A group of endpoints under one OpenAPI tag."""

    tag: str
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self, method: str, path: str, *, access: Access = "public", summary: str = "", **extra: Any
    ) -> Callable[[Handler], Handler]:
        if extra.get("cache") is not None and method != "GET":
            raise ValueError(f"{method} {path}: only reads are cached")

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
        dispatch = Methods(methods)
        routes.append(Route(path, dispatch, methods=list(methods)))
        alias = path.rstrip("/") if path.endswith("/") and path != "/" else path + "/"
        if alias not in by_path:
            routes.append(Route(alias, dispatch, methods=list(methods), include_in_schema=False))
    return routes


class Methods:
    """The endpoints of one path by method, as the ASGI app of its Starlette route."""

    def __init__(self, endpoints: dict[str, Endpoint]) -> None:
        self.by_method = dict(endpoints)
        if "GET" in endpoints:
            self.by_method.setdefault("HEAD", endpoints["GET"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.by_method[scope["method"]](scope, receive, send)


class FastRouter(StarletteRouter):
    """Starlette's router, finding our endpoints without its scan when the route is certain.

    It is the innermost app of Starlette's middleware stack (``build_middleware_stack`` wraps
    ``App.router``), so ServerErrorMiddleware, every middleware added with ``add_middleware`` and
    ExceptionMiddleware see every request, hot ones included. Only the route lookup is faster: a
    path without parameters is found in one lookup when no earlier route could match it
    (``exact_routes``); other paths take the same in-order scan as Starlette and the first full
    match, kept per method and path, since the same few (a hot screening's cancel, seat map and
    availability) come again and again and the scan tries a dozen patterns before them. The
    scope gets what Starlette's router puts in it (``router``, ``route``, ``endpoint``,
    ``path_params``), so a middleware reading the matched route works on both paths. Anything
    else (405s, redirects, websockets, mounts, other apps' routes, a root_path) is Starlette's.
    """

    def __init__(self, routes: list[BaseRoute], lifespan: Lifespan[Any] | None = None) -> None:
        super().__init__(routes, lifespan=lifespan)
        self.exact = exact_routes(routes)
        self.scanned = [r for r in routes if not isinstance(r, WebSocketRoute)]
        # (method, path) -> the route the scan found and its path parameters.
        self.found: dict[tuple[str, str], tuple[Route, dict[str, Any]]] = {}

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            endpoint = self.direct(scope)
            if endpoint is not None:
                scope.setdefault("router", self)
                await endpoint(scope, receive, send)
                return
        await super().app(scope, receive, send)

    def direct(self, scope: Scope) -> Endpoint | None:
        """The endpoint Starlette's scan would run for this request, when that is certain."""
        route = self.exact.get(scope["path"])
        if route is not None:
            scope["endpoint"], scope["path_params"] = route.endpoint, {}
        else:
            route = self._scan(scope)
        if route is None or not isinstance(route.app, Methods):
            return None
        endpoint = route.app.by_method.get(scope["method"])
        if endpoint is not None:
            scope["route"] = route
        return endpoint

    def _scan(self, scope: Scope) -> Route | None:
        key = (scope["method"], scope["path"])
        found = self.found.get(key)
        if found is not None:
            known, params = found
            scope["endpoint"], scope["path_params"] = known.endpoint, dict(params)
            return known
        for route in self.scanned:
            if not isinstance(route, Route):
                return None  # a mount or an unknown kind of route: Starlette decides
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                if len(key[1]) <= MAX_SCANNED_PATH:
                    if len(self.found) >= MAX_SCANNED:
                        self.found.clear()
                    self.found[key] = (route, dict(child["path_params"]))
                return route
        return None


class App(Starlette):
    """Starlette with ``FastRouter`` as its router: the same middleware stack for every route."""

    router: FastRouter

    def __init__(
        self, *, routes: list[BaseRoute], lifespan: Lifespan[Any] | None = None, **kw: Any
    ) -> None:
        super().__init__(routes=routes, lifespan=lifespan, **kw)
        self.router = FastRouter(routes, lifespan=lifespan)


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
