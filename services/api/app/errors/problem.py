"""Rendering: every error answer is one RFC 9457 problem document (`application/problem+json`)."""

from http import HTTPStatus
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from app.errors.exceptions import ProblemError
from app.observability.context import request_id_var

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://fastapi-stack.dev/problems/"


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status the standard library does not name
        return "Error"


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
    phrase = reason_phrase(status)
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


async def problem_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request, exc.status, exc.detail, slug=exc.slug, title=exc.title, headers=exc.headers
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """The 500 for anything no other handler claims; it says nothing about what failed.

    Not logged here: Starlette's ServerErrorMiddleware, which calls this handler, re-raises the
    exception once the response is sent, and the server logs it with its traceback (Uvicorn:
    `uvicorn.error`, "Exception in ASGI application"; our JSON formatter adds the request id).
    Logging here as well wrote every 500 twice.
    """
    return problem_response(request, 500, "An unexpected error occurred.", slug="internal")
