"""One error shape for every failure: RFC 9457 problem details (`application/problem+json`).

Domain code raises `ProblemError` subclasses; handlers are registered by exception class, so a
client mistake can never turn into a stack trace and an unexpected failure leaks nothing.
"""

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.observability.context import request_id_var

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
        errors.append(
            {
                "field": ".".join(location[1:]) or location[0] if location else "",
                "location": location[0] if location else "",
                "message": error.get("msg", ""),
                "type": error.get("type", ""),
            }
        )
    return errors


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    fields = ", ".join(sorted({e["field"] for e in errors if e["field"]}))
    return problem_response(
        request,
        422,
        f"Request validation failed: {fields}" if fields else "Request validation failed",
        slug="validation-error",
        extra={"errors": errors},
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, exc.status_code, detail, headers=headers)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("database unavailable: %s", type(exc).__name__, extra={"error": str(exc)[:300]})
    return problem_response(
        request,
        503,
        "The database is unavailable; retry shortly.",
        slug="database-unavailable",
        headers={"Retry-After": "1"},
    )


async def _database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    # A lost connection is an outage (503); any other driver error is a bug in our code (500).
    if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
        return await _database_unavailable(request, exc)
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled exception", exc_info=exc)
    return problem_response(request, 500, "An unexpected error occurred.", slug="internal")


def register_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_error)
    # asyncpg raises OSError (refused, reset) straight from connect() in some paths.
    app.add_exception_handler(OSError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
