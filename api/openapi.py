"""``/openapi.json`` built from the route declarations (``api/docs.py`` renders it)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from api.routing import Endpoint

_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
# 422: FastAPI's components. The detail lists every problem of the request's shape, or is a
# text for a rule beyond it (a route's own refusal, as FastAPI's HTTPException(422, text)).
VALIDATION_SCHEMAS = {
    "ValidationError": {
        "title": "ValidationError",
        "type": "object",
        "properties": {
            "loc": {
                "title": "Location",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
            "input": {"title": "Input"},
            "ctx": {"title": "Context", "type": "object"},
        },
        "required": ["loc", "msg", "type"],
    },
    "HTTPValidationError": {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {
                "title": "Detail",
                "anyOf": [
                    {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                    {"type": "string"},
                ],
            }
        },
        "required": ["detail"],
    },
}
ERROR_TEXT = {
    400: "Malformed or refused input",
    401: "Not authenticated",
    402: "Payment refused (SEATLOCK_PAYMENT_VERIFIER=hmac: not a signed payment_id for this)",
    403: "Not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests (see Retry-After)",
    503: "Service temporarily unavailable (see Retry-After)",
}
# The two ways to sign in that the documentation offers: a pasted access token, or the OAuth2
# password flow, in which Swagger UI's "Authorize" posts the form (username, password) to the login
# route, which takes it as well as JSON, and sends the access token it gets as a bearer header.
TOKEN_URL = "/api/v1/auth/login"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "OAuth2PasswordBearer": {
        "type": "oauth2",
        "flows": {"password": {"tokenUrl": TOKEN_URL, "scopes": {}}},
    },
}
SIGNED_IN: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
ACCESS_TEXT = {
    "public": "Public.",
    "optional": "Public; a bearer token, when given, identifies the caller.",
    "user": "Signed-in users (bearer JWT).",
    "admin": "Admins only (bearer JWT).",
}


def openapi_document(endpoints: list[Endpoint], title: str, version: str) -> dict[str, Any]:
    types = _collect_types(endpoints)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schemas, components = _decimals_as_sent(schemas), _decimals_as_sent(components)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, Any] = {}
    for ep in endpoints:
        path = _PARAM.sub(r"{\1}", ep.path)
        paths.setdefault(path, {})[ep.method.lower()] = _operation(ep, schema_of, components)
    components["Error"] = ERROR_SCHEMA
    components.update(VALIDATION_SCHEMAS)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _decimals_as_sent(node: Any) -> Any:
    """msgspec describes a Decimal as a string, but the one encoder (api/rendering.py) sends it
    as a JSON number, and the decoder takes a number too: document what is sent."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "decimal":
            return {k: v for k, v in node.items() if k != "format"} | {"type": "number"}
        return {key: _decimals_as_sent(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_decimals_as_sent(item) for item in node]
    return node


def _collect_types(endpoints: list[Endpoint]) -> list[Any]:
    seen: list[Any] = []
    for ep in endpoints:
        for kind in (ep.body, ep.query, ep.response):
            if kind is not None and kind not in seen:
                seen.append(kind)
    return seen


def _operation(
    ep: Endpoint, schema_of: dict[Any, Any], components: dict[str, Any]
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [ep.tag],
        "summary": ep.summary,
        "description": ACCESS_TEXT[ep.access],
        "operationId": f"{ep.handler.__module__.rsplit('.', 1)[-1]}_{ep.handler.__name__}",
        "parameters": _path_parameters(ep.path) + _query_parameters(ep, schema_of, components),
        "responses": _responses(ep, schema_of),
    }
    if ep.access in ("user", "admin"):
        op["security"] = [*SIGNED_IN]
    elif ep.access == "optional":
        op["security"] = [{}, *SIGNED_IN]
    if ep.body is not None:
        content: dict[str, Any] = {"application/json": {"schema": schema_of[ep.body]}}
        if ep.form:
            content["application/x-www-form-urlencoded"] = {"schema": schema_of[ep.body]}
        if ep.upload:
            content = {"multipart/form-data": {"schema": schema_of[ep.body]}}
        op["requestBody"] = {"required": not ep.optional_body, "content": content}
    return op


def _path_parameters(path: str) -> list[dict[str, Any]]:
    params = []
    for match in _PARAM.finditer(path):
        kind = "integer" if ":int}" in match.group(0) else "string"
        params.append(
            {"name": match.group(1), "in": "path", "required": True, "schema": {"type": kind}}
        )
    return params


def _query_parameters(
    ep: Endpoint, schema_of: dict[Any, Any], components: dict[str, Any]
) -> list[dict[str, Any]]:
    if ep.query is None:
        return []
    ref = schema_of[ep.query].get("$ref", "")
    schema = components.get(ref.rsplit("/", 1)[-1], schema_of[ep.query])
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _responses(ep: Endpoint, schema_of: dict[Any, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    ok: dict[str, Any] = {"description": "Success"}
    if ep.response is not None:
        ok["content"] = {"application/json": {"schema": schema_of[ep.response]}}
    responses: dict[str, Any] = {str(ep.status): ok}
    invalid = {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}
    for status in error_statuses(ep):
        content = invalid if status == 422 else error["content"]
        responses[str(status)] = {"description": ERROR_TEXT[status], "content": content}
    return responses


def error_statuses(ep: Endpoint) -> list[int]:
    """Every error status the endpoint can answer: its kind's, then those it declares."""
    statuses = {503, *ep.errors}  # a dependency down (Redis, PostgreSQL): everywhere
    if ep.access in ("user", "admin", "optional"):
        statuses.add(401)  # "optional": a token given but not valid is refused, not ignored
    if ep.access == "admin":
        statuses.add(403)
    if _PARAM.search(ep.path):
        statuses.add(404)  # an id that names no row (or another user's: invariant 9)
    if ep.body is not None:
        # refused by a route rule, too large, not JSON (nor a form), not the declared shape
        statuses |= {400, 413, 415, 422}
    if ep.query is not None:
        statuses.add(422)
    return sorted(statuses)
