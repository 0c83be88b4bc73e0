"""Every error status an operation can answer is in /openapi.json, with the ``{"detail": ...}``
schema: by the rules of its kind (path id, body, access level, backends), by the refusals its flow
can meet (conflicts, throttling, payments), and over real HTTP for the refusals every operation
of a kind gives (an id naming nothing, a body too large, no token, a user's token on admin routes).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from api.openapi import ACCESS_TEXT
from api.rendering import MAX_BODY_BYTES
from tests.support import Account

Operation = tuple[str, str]  # (METHOD, /path/{param})

# Routes whose flow can meet the current state: a seat taken, a name or review already there, a
# payment_id already used, tickets sold for what is being deleted or moved.
CONFLICTS = [
    ("POST", "/api/v1/seat-reservations/reserve"),
    ("POST", "/api/v1/seat-reservations/extend"),
    ("DELETE", "/api/v1/seat-reservations/cancel/{screening_id}"),
    ("POST", "/api/v1/tickets/book"),
    ("POST", "/api/v1/tickets/book-from-reservation"),
    ("DELETE", "/api/v1/tickets/{ticket_id}"),
    ("POST", "/api/v1/tickets/{ticket_id}/confirm-payment"),
    ("PUT", "/api/v1/tickets/{ticket_id}/status"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/movies/{movie_id}/reviews"),
    ("POST", "/api/v1/cinemas/{cinema_id}/rooms/"),
    ("POST", "/api/v1/rooms/{room_id}/seats/bulk"),
    ("POST", "/api/v1/screenings/"),
    ("PUT", "/api/v1/screenings/{screening_id}"),
    ("DELETE", "/api/v1/screenings/{screening_id}"),
    ("DELETE", "/api/v1/cinemas/{cinema_id}"),
    ("DELETE", "/api/v1/movies/{movie_id}"),
]
THROTTLED = [("POST", "/api/v1/auth/login"), ("POST", "/api/v1/seat-reservations/cleanup")]
# With SEATLOCK_PAYMENT_VERIFIER=hmac, an unsigned payment_id is a 402.
PAID = [
    ("POST", "/api/v1/tickets/book"),
    ("POST", "/api/v1/tickets/book-from-reservation"),
    ("POST", "/api/v1/tickets/{ticket_id}/confirm-payment"),
]
# Releasing the holds one has on a screening that does not exist releases nothing: a 204.
NOTHING_TO_DO = [("DELETE", "/api/v1/seat-reservations/cancel/{screening_id}")]
_PARAM = re.compile(r"{(\w+)}")
ADMINS = ACCESS_TEXT["admin"]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    from api.app import all_endpoints
    from api.openapi import openapi_document

    return openapi_document(all_endpoints(), "seatlock", "test")


def operations(doc: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }


def missing(doc: dict[str, Any], status: int, wanted: list[Operation]) -> list[str]:
    ops = operations(doc)
    return [f"{m} {p}" for m, p in wanted if str(status) not in ops[(m, p)]["responses"]]


def test_every_operation_with_a_path_id_documents_404(doc: dict[str, Any]) -> None:
    with_id = [key for key in operations(doc) if _PARAM.search(key[1])]
    assert len(with_id) >= 45
    assert missing(doc, 404, with_id) == []


def test_every_operation_with_a_body_documents_400_413_and_422(doc: dict[str, Any]) -> None:
    with_body = [key for key, op in operations(doc).items() if "requestBody" in op]
    for status in (400, 413, 422):
        assert missing(doc, status, with_body) == [], status


def test_every_operation_documents_503(doc: dict[str, Any]) -> None:
    assert missing(doc, 503, list(operations(doc))) == []


def test_access_levels_document_401_and_403(doc: dict[str, Any]) -> None:
    for (method, path), op in operations(doc).items():
        if "security" in op:  # signed in, or optional: a token given must be valid
            assert "401" in op["responses"], f"{method} {path}"
        if op["description"] == ADMINS:
            assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"


def test_conflicts_throttling_and_payments_are_documented(doc: dict[str, Any]) -> None:
    assert missing(doc, 409, CONFLICTS) == []
    assert missing(doc, 429, THROTTLED) == []
    assert missing(doc, 402, PAID) == []


def test_every_error_has_the_detail_schema(doc: dict[str, Any]) -> None:
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"]
    for (method, path), op in operations(doc).items():
        for status, response in op["responses"].items():
            if status.startswith("2") or status == "422":  # 422: its own shape
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"
            assert response["description"]


def test_confirm_payment_declares_its_optional_body(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/api/v1/tickets/{ticket_id}/confirm-payment"]["post"]
    assert op["requestBody"]["required"] is False
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert "payment_id" in schema["properties"]
    assert schema.get("required", []) == []


# -- the same refusals over real HTTP ----------------------------------------------------------


def concrete(path: str) -> str:
    """The path with ids that name nothing."""
    return _PARAM.sub(lambda m: "nothing.png" if m.group(1) == "name" else "987654321", path)


async def answer(
    client: httpx.AsyncClient, key: Operation, headers: dict[str, str], **kw: Any
) -> int:
    method, path = key
    r = await client.request(method, concrete(path), headers=headers, **kw)
    if r.status_code >= 400:
        assert set(r.json()) == {"detail"}, r.text
    return r.status_code


async def test_ids_that_name_nothing_get_documented_404s(
    client: httpx.AsyncClient, doc: dict[str, Any], admin: Account
) -> None:
    undocumented, not_404 = [], []
    for key, op in operations(doc).items():
        if not _PARAM.search(key[1]) or "requestBody" in op:
            continue  # a body is checked before the id: see the next test
        status = await answer(client, key, admin.headers)
        if str(status) not in op["responses"]:
            undocumented.append(f"{key} -> {status}")
        if status != 404 and key not in NOTHING_TO_DO:
            not_404.append(f"{key} -> {status}")
    assert undocumented == []
    assert not_404 == []


async def test_bodies_too_large_get_documented_413s(
    client: httpx.AsyncClient, doc: dict[str, Any], admin: Account
) -> None:
    big = b'{"x": "' + b"x" * MAX_BODY_BYTES + b'"}'
    headers = admin.headers | {"content-type": "application/json"}
    wrong = []
    for key, op in operations(doc).items():
        content = op.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            continue  # the picture upload has its own limit (tests/api/test_profiles.py)
        status = await answer(client, key, headers, content=big)
        if status != 413 or "413" not in op["responses"]:
            wrong.append(f"{key} -> {status}")
    assert wrong == []


async def test_tokens_missing_or_not_admin_get_documented_401s_and_403s(
    client: httpx.AsyncClient, doc: dict[str, Any], user: Account
) -> None:
    wrong = []
    for key, op in operations(doc).items():
        security = op.get("security")
        if security is None or {} in security:
            continue
        status = await answer(client, key, {})
        if status != 401 or "401" not in op["responses"]:
            wrong.append(f"{key} without a token -> {status}")
        if op["description"] == ADMINS:
            status = await answer(client, key, user.headers)
            if status != 403 or "403" not in op["responses"]:
                wrong.append(f"{key} as a user -> {status}")
    assert wrong == []
