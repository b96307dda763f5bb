"""Database failures as problems, by SQLSTATE: an outage is a 503, the client's value a 422.

app.database turns every way of losing the database (connect refused or timed out, a connection
dropped mid-statement) into SQLAlchemy's OperationalError, so everything arrives here as a
DBAPIError or the pool's TimeoutError; nothing is guessed from other exception types.
"""

import logging

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError

from app.errors.problem import problem_response, unexpected_error

logger = logging.getLogger("app.errors")

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


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The 503 for an outage; also the handler of the pool's TimeoutError (no free connection)."""
    # The engine hides bound parameters (app.database), so the text names the statement and the
    # driver's reason, never a value.
    logger.warning("database unavailable: %s", type(exc).__name__, extra={"error": str(exc)[:300]})
    return problem_response(
        request,
        503,
        "The database is unavailable; retry shortly.",
        slug="database-unavailable",
        headers={"Retry-After": "1"},
    )


async def database_error(request: Request, exc: Exception) -> Response:
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
        return await database_unavailable(request, exc)
    if sqlstate.startswith(_INVALID_DATA_CLASS):
        logger.warning("database refused a value: %s", sqlstate, extra={"error": str(exc.orig)})
        return problem_response(
            request, 422, "A value was refused by the database.", slug="invalid-value"
        )
    if sqlstate.startswith(_CONFLICT_CLASS):
        logger.warning("constraint violated: %s", sqlstate, extra={"error": str(exc.orig)})
        detail = "The request conflicts with the current state of the data."
        return problem_response(request, 409, detail, slug="conflict")
    # Handled here, inside Starlette's ExceptionMiddleware, so no server ever sees it: the one
    # log line of this 500 is this one.
    logger.error("unexpected database error: %s", sqlstate or "no SQLSTATE", exc_info=exc)
    return await unexpected_error(request, exc)
