"""Route dispatch: hot routes first, exact paths looked up, endpoints found without Starlette's
scan, inside its middleware stack, with Starlette's behaviour kept."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import Response
from starlette.routing import Match, Route

from api.app import all_endpoints
from api.routing import MAX_SCANNED, MAX_SCANNED_PATH, App, Call, Endpoint, query_of, query_params
from seatlock.errors import RequestInvalid
from seatlock.server.wiring import create_app
from seatlock.settings import Settings
from tests.support import Account


def scan(routes: list[Route], method: str, path: str) -> Route | None:
    """What Starlette's in-order scan picks: the first full match, else the first partial."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def sample(path: str) -> str:
    return re.sub(r"\{[^}:]+(:int)?\}", lambda m: "1" if m.group(1) else "x", path)


def direct(app: App, method: str, path: str) -> Endpoint | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return app.router.direct(scope)


def test_every_endpoint_is_reached_by_its_own_path(base_settings: Settings) -> None:
    app = create_app(base_settings)
    routes = [r for r in app.router.routes if isinstance(r, Route)]
    for ep in all_endpoints():
        for path in {sample(ep.path), sample(ep.path).rstrip("/") or "/"}:
            route = scan(routes, ep.method, path)
            assert route is not None and route.path.rstrip("/") == ep.path.rstrip("/"), path
            if path in app.router.exact:
                assert app.router.exact[path] is route
            # The direct path serves exactly the endpoint Starlette's scan would run.
            assert direct(app, ep.method, path) is ep, (ep.method, path)


def test_exact_lookup_covers_the_hot_parameterless_paths(base_settings: Settings) -> None:
    app = create_app(base_settings)
    hot = ["/api/v1/seat-reservations/reserve", "/api/v1/auth/me", "/health/live"]
    assert all(path in app.router.exact for path in hot)


def test_what_the_direct_path_leaves_to_starlette(base_settings: Settings) -> None:
    app = create_app(base_settings)
    assert direct(app, "DELETE", "/api/v1/seat-reservations/reserve") is None  # 405
    assert direct(app, "GET", "/api/v1/no-such-thing") is None  # 404
    assert direct(app, "GET", "/openapi.json") is None  # not an endpoint
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/api/v1/screenings/7"}
    ep = app.router.direct(scope)
    assert ep is not None and ep.path == "/api/v1/screenings/{screening_id:int}"
    assert scope["path_params"] == {"screening_id": 7}
    head = direct(app, "HEAD", "/health/live")
    assert head is not None and head.method == "GET"


async def test_wrong_method_is_405_with_a_json_detail(client: httpx.AsyncClient) -> None:
    for method, path in [("DELETE", "/api/v1/seat-reservations/reserve"), ("PUT", "/health/live")]:
        r = await client.request(method, path)
        assert r.status_code == 405, path
        assert r.json() == {"detail": "Method Not Allowed"}
        assert r.headers["content-type"] == "application/json"


async def test_an_id_of_any_length_is_a_json_404(client: httpx.AsyncClient, admin: Account) -> None:
    """Past 4,300 digits Python's int() refuses a string: that was a 500 on every id route."""
    for digits in (20, 4301, 10_000):
        huge = "9" * digits
        for ep in all_endpoints():
            if ":int}" not in ep.path:
                continue
            path = re.sub(r"\{[^}:]+:int\}", huge, ep.path)
            path = re.sub(r"\{[^}]+\}", "x", path)
            r = await client.request(ep.method, path, headers=admin.headers)
            assert r.status_code == 404, (ep.method, path[:60], r.text[:200])
            assert r.json()["detail"].endswith("not found"), (ep.method, path[:60])


async def test_trailing_slash_aliases_and_unknown_paths(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await client.get("/api/v1/auth/me/", headers=user.headers)).status_code == 200
    assert (await client.get("/health/live/")).status_code == 200
    assert (await client.get("/openapi.json")).status_code == 200
    r = await client.get("/api/v1/no-such-thing")
    assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})


async def messages_of(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_204_is_sent_as_starlette_sends_it() -> None:
    async def nothing(call: Call) -> None:
        return None

    endpoint = Endpoint("DELETE", "/x", nothing, "public", "", "t", status=204)
    state = SimpleNamespace(services=None)
    scope = {"type": "http", "method": "DELETE", "headers": [], "app": SimpleNamespace(state=state)}
    assert await messages_of(endpoint, scope) == await messages_of(Response(status_code=204), scope)


@given(st.lists(st.sampled_from(["a", "b", "=", "&", ",", "1", "é", "%", "+", "%41", ";", " "])))
def test_query_params_read_as_parse_qsl_reads_them(parts: list[str]) -> None:
    raw = "".join(parts).encode("latin-1")
    expected = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
    assert query_params({"query_string": raw}) == expected


def test_a_scanned_path_is_found_again_with_its_own_parameters(base_settings: Settings) -> None:
    app = create_app(base_settings)
    cancel = "/api/v1/seat-reservations/cancel/{screening_id:int}"
    for sid in (7, 8, 7):
        scope: dict[str, Any] = {"type": "http", "method": "DELETE", "root_path": ""}
        scope["path"] = f"/api/v1/seat-reservations/cancel/{sid}"
        ep = app.router.direct(scope)
        assert ep is not None and ep.path == cancel
        assert scope["path_params"] == {"screening_id": sid}
        scope["path_params"]["screening_id"] = 0  # a handler's change stays its own
    assert ("DELETE", "/api/v1/seat-reservations/cancel/7") in app.router.found
    assert direct(app, "GET", "/api/v1/seat-reservations/cancel/7") is None  # 405: not kept
    assert ("GET", "/api/v1/seat-reservations/cancel/7") not in app.router.found
    for n in range(MAX_SCANNED + 10):
        direct(app, "GET", f"/api/v1/screenings/{n}")
    assert len(app.router.found) <= MAX_SCANNED
    # A path parameter that takes any text: found every time, never kept (up to 64 KB a path).
    app.router.found.clear()
    name = "x" * MAX_SCANNED_PATH
    assert direct(app, "GET", f"/media/profile-pictures/{name}") is not None
    assert app.router.found == {}


class SharedQuery(msgspec.Struct, frozen=True):
    flag: bool = False


class OwnQuery(msgspec.Struct):
    flag: bool = False


class NeededQuery(msgspec.Struct, frozen=True):
    limit: int


def test_an_absent_query_string_shares_only_frozen_defaults() -> None:
    """A bare request pays no conversion when its query type is frozen (nothing can change the
    shared instance); a mutable one, or one with a required parameter, converts every time."""
    bare: dict[str, Any] = {"query_string": b""}
    assert query_of(bare, SharedQuery) is query_of({}, SharedQuery) == SharedQuery()
    assert query_of({"query_string": b"flag=true"}, SharedQuery) == SharedQuery(flag=True)
    assert query_of(bare, OwnQuery) is not query_of(bare, OwnQuery)
    with pytest.raises(RequestInvalid) as refused:
        query_of(bare, NeededQuery)
    assert refused.value.errors[0]["loc"] == ["query", "limit"]
