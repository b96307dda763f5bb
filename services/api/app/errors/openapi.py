"""What the OpenAPI document says about errors: every error response is problem+json.

So a schema-driven client or fuzzer (schemathesis, tests/e2e) can hold the API to it.
"""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.errors.problem import PROBLEM_CONTENT_TYPE
from app.schemas.problem import Problem


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
    408: "The body did not arrive within REQUEST_BODY_TIMEOUT_SECONDS of the header",
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


def install_problem_schema(app: FastAPI) -> None:
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
