"""422s that name each invalid field, and 415 when the body was not JSON in the first place."""

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from app.errors.exceptions import UnsupportedMediaTypeError
from app.errors.problem import problem_error, problem_response


def field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
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


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def has_body(request: Request) -> bool:
    # nginx buffers every body and sends Content-Length; chunked only reaches a replica directly.
    return (
        request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    )


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc)
    # FastAPI parses only JSON bodies and hands anything else to validation as raw bytes, which
    # would read as "body: invalid"; the client's actual mistake is the media type.
    if (
        any(e["location"] == "body" for e in errors)
        and has_body(request)
        and not is_json(request.headers.get("content-type"))
    ):
        sent = request.headers.get("content-type", "no Content-Type")
        return await problem_error(
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
