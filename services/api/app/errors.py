"""One error shape for every failure: RFC 9457 problem details (`application/problem+json`).

Domain code raises `ProblemError` subclasses; handlers are registered by exception class, so a
client mistake can never turn into a stack trace and an unexpected failure leaks nothing. The
OpenAPI document says the same: every error response is declared as problem+json (see
`problem_responses`), so a schema-driven client or fuzzer can hold the API to it.
"""

import logging
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.observability.context import request_id_var
from app.schemas.problem import Problem

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://fastapi-stack.dev/problems/"

logger = logging.getLogger("app.errors")


class ProblemError(Exception):
    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class NotFoundError(ProblemError):
    status, title, slug = 404, "Not Found", "not-found"


class ConflictError(ProblemError):
    status, title, slug = 409, "Conflict", "conflict"


class UnauthorizedError(ProblemError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="api"'})


class ForbiddenError(ProblemError):
    status, title, slug = 403, "Forbidden", "forbidden"


class PreconditionFailedError(ProblemError):
    status, title, slug = 412, "Precondition Failed", "precondition-failed"


class UnsupportedMediaTypeError(ProblemError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class ServiceUnavailableError(ProblemError):
    status, title, slug = 503, "Service Unavailable", "service-unavailable"


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    request_id = request_id_var.get()
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or phrase.lower().replace(" ", "-")),
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request_id,
    }
    if extra:
        body.update(extra)
    all_headers = {"X-Request-ID": request_id} if request_id else {}
    all_headers.update(headers or {})
    return Response(
        orjson.dumps(body), status_code=status, headers=all_headers, media_type=PROBLEM_CONTENT_TYPE
    )


async def _problem_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request, exc.status, exc.detail, slug=exc.slug, title=exc.title, headers=exc.headers
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        # "body" / "query" / "path" first, then the field path: the client sees which field.
        location = [str(part) for part in error.get("loc", ())]
        message = error.get("msg", "")
        if error.get("type") == "json_invalid":
            # The location's second part is a character offset, not a field.
            reason = error.get("ctx", {}).get("error", "")
            message = f"{message}: {reason} at position {location[1]}" if reason else message
            location = location[:1]
        errors.append(
            {
                "field": ".".join(location[1:]) or location[0] if location else "",
                "location": location[0] if location else "",
                "message": message,
                "type": error.get("type", ""),
            }
        )
    return errors


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    # nginx buffers every body and sends Content-Length; chunked only reaches a replica directly.
    return (
        request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    # FastAPI parses only JSON bodies and hands anything else to validation as raw bytes, which
    # would read as "body: invalid"; the client's actual mistake is the media type.
    if (
        any(e["location"] == "body" for e in errors)
        and _has_body(request)
        and not _is_json(request.headers.get("content-type"))
    ):
        sent = request.headers.get("content-type", "no Content-Type")
        return await _problem_error(
            request, UnsupportedMediaTypeError(f"Send the body as application/json, not {sent}.")
        )
    fields = ", ".join(sorted({e["field"] for e in errors if e["field"]}))
    return problem_response(
        request,
        422,
        f"Request validation failed: {fields}" if fields else "Request validation failed",
        slug="validation-error",
        extra={"errors": errors},
    )


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _allowed_methods(request: Request) -> str | None:
    """Every method the OpenAPI document lists for this path (and HEAD wherever GET is).

    Starlette's 405 names only the methods of the first route whose path matched, so with GET
    and POST on /users as two routes, a PUT would be told `Allow: POST`. The document is the
    API's own list of what each path accepts; None for paths it leaves out (/metrics, /docs).
    """
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_table", None
    )
    if table is None:
        table = [
            (
                re.compile("^" + re.sub(r"\\\{[^/}]+\\\}", "[^/]+", re.escape(path)) + "$"),
                {method.upper() for method in operations if method in _HTTP_METHODS},
            )
            for path, operations in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allow_table = table
    methods: set[str] = set()
    for pattern, operations in table:
        if pattern.match(request.url.path):
            methods |= operations
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)) or None


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return problem_response(request, exc.status_code, detail, headers=headers or None)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("database unavailable: %s", type(exc).__name__, extra={"error": str(exc)[:300]})
    return problem_response(
        request,
        503,
        "The database is unavailable; retry shortly.",
        slug="database-unavailable",
        headers={"Retry-After": "1"},
    )


# SQLSTATEs (PostgreSQL appendix A) that mean "the database cannot serve now", not "this request
# is wrong": connection failures (08), too many connections and out-of-resources (53), the
# server shutting down, crashed or still starting (57P01-57P03), a statement cut off by
# statement_timeout (57014), and serialization failures and deadlocks, which a retry resolves.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03", "57014", "40001", "40P01")
# Data exceptions (22: a NUL byte in text, a number out of range, ...): the client's value,
# refused by PostgreSQL after the schemas let it through; they are the last line, not the first.
_INVALID_DATA_CLASS = "22"
# Integrity violations (23): a unique or foreign key the request ran into, e.g. a user deleted
# while their item was being created.
_CONFLICT_CLASS = "23"


async def _database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    sqlstate: str = getattr(exc.orig, "sqlstate", None) or ""
    # A lost connection is an outage (503), whichever way the driver reports it: asyncpg's
    # protocol can also fail with an internal "another operation is in progress" error on a
    # connection the server dropped mid-query, which carries no SQLSTATE.
    if (
        exc.connection_invalidated
        or isinstance(exc, OperationalError | InterfaceError)
        or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
        or (isinstance(exc, InternalError) and not sqlstate)
    ):
        return await _database_unavailable(request, exc)
    if sqlstate.startswith(_INVALID_DATA_CLASS):
        logger.warning("database refused a value: %s", sqlstate, extra={"error": str(exc.orig)})
        return problem_response(
            request, 422, "A value was refused by the database.", slug="invalid-value"
        )
    if sqlstate.startswith(_CONFLICT_CLASS):
        logger.warning("constraint violated: %s", sqlstate, extra={"error": str(exc.orig)})
        detail = "The request conflicts with the current state of the data."
        return problem_response(request, 409, detail, slug="conflict")
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled exception", exc_info=exc)
    return problem_response(request, 500, "An unexpected error occurred.", slug="internal")


def _problem_content(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}},
        },
    }


_DESCRIPTIONS: dict[int | str, str] = {
    400: "The body is not parseable (nesting too deep, a number too long)",
    401: "Missing or invalid token",
    403: "Not allowed for this token",
    404: "No such resource",
    409: "Conflicts with the current state (a taken email, say)",
    412: "If-Match does not match the current version",
    415: "The body is not application/json",
    422: "A value is invalid; `errors` names each field",
    503: "A dependency (PostgreSQL) is unavailable; retry after Retry-After",
    # Anything else the stack may answer: 413 and 429 from nginx, 500, 502 and 504.
    "default": "Any other error, in the same problem+json shape",
}


def problem_responses(*statuses: int | str, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring these statuses as problem+json.

    `descriptions` overrides the generic text per status, keyed "s404" and so on.
    """
    return {
        status: _problem_content(descriptions.get(f"s{status}", _DESCRIPTIONS[status]))
        for status in statuses
    }


def _install_problem_schema(app: FastAPI) -> None:
    """Put the Problem schema the `responses=` entries refer to into the OpenAPI components.

    FastAPI only lists models that a route returns as application/json; the problem documents
    are application/problem+json, so the schema is added here, once, when the document is built.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[Problem.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def register_exception_handlers(app: FastAPI) -> None:
    _install_problem_schema(app)
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_error)
    # asyncpg raises OSError (refused, reset) straight from connect() in some paths.
    app.add_exception_handler(OSError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
