"""One error shape for every failure: RFC 9457 problem details (`application/problem+json`).

Domain code raises `ProblemError` subclasses (exceptions); handlers are registered by exception
class, so a client mistake can never turn into a stack trace and an unexpected failure leaks
nothing. Rendering (problem), request validation (validation), Starlette's HTTP errors and the
405 Allow header (http), database failures by SQLSTATE (database) and the OpenAPI declarations
(openapi) each have their module.
"""

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException

from app.errors.database import database_error, database_unavailable
from app.errors.exceptions import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PreconditionFailedError,
    ProblemError,
    UnauthorizedError,
)
from app.errors.http import AllowedMethods
from app.errors.openapi import install_problem_schema, problem_responses
from app.errors.problem import problem_error, problem_response, unexpected_error
from app.errors.validation import validation_error

__all__ = [
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PreconditionFailedError",
    "UnauthorizedError",
    "problem_response",
    "problem_responses",
    "register_exception_handlers",
]


def register_exception_handlers(app: FastAPI) -> None:
    install_problem_schema(app)
    app.add_exception_handler(ProblemError, problem_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, AllowedMethods(app).http_exception)
    # No connection free in the pool within DB_POOL_TIMEOUT_SECONDS.
    app.add_exception_handler(PoolTimeoutError, database_unavailable)
    app.add_exception_handler(DBAPIError, database_error)
    # Everything else, any OSError included (app.database turns the database's own into
    # DBAPIErrors): a 500 that names nothing, logged once by the server.
    app.add_exception_handler(Exception, unexpected_error)
