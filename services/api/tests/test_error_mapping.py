"""Every failure maps to the right problem: bad bodies, unsupported methods, database errors."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import DBAPIError, InternalError

from app.main import create_app
from stack.testing.api import assert_problem, create_item, create_user
from stack.testing.asgi import MakeSettings, Serve


async def test_a_body_that_is_not_json_is_415(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    body = b'{"name": "x", "price": 1}'
    for headers in ({"Content-Type": "text/plain"}, {}, {"Content-Type": "application/xml"}):
        response = await client.post("/items", content=body, headers={**headers, **owner.auth})
        problem = assert_problem(response, 415)
        assert "application/json" in problem["detail"]
    # JSON in any of its spellings is JSON; an empty body is a missing body, not a media type.
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.post(
            "/items", content=body, headers={"Content-Type": content_type, **owner.auth}
        )
        assert response.status_code == 201, response.text
    empty = await client.post("/items", content=b"", headers=owner.auth)
    assert_problem(empty, 422)


async def test_malformed_json_names_the_position(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422)
    (error,) = problem["errors"]
    assert (error["field"], error["location"], error["type"]) == ("body", "body", "json_invalid")
    assert "position 10" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\x00b", "price": 1}, "name"),
        ({"name": "ok", "price": 1, "description": "tab\tok but NUL\x00 not"}, "description"),
    ],
)
async def test_nul_is_a_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    owner = await create_user(client)
    problem = assert_problem(await client.post("/items", json=body, headers=owner.auth), 422)
    assert [(e["field"], e["type"]) for e in problem["errors"]] == [(field, "string_nul")]
    item = await create_item(client, owner)
    patch = await client.patch(f"/items/{item['id']}", json={field: "\x00"}, headers=owner.auth)
    problem = assert_problem(patch, 422)
    assert [(e["field"], e["type"]) for e in problem["errors"]] == [(field, "string_nul")]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/users", "POST"),
        ("OPTIONS", "/users/1", "DELETE, GET, HEAD"),
        ("PUT", "/items/1", "DELETE, GET, HEAD, PATCH"),
        ("DELETE", "/items", "GET, HEAD, POST"),
        # A concrete path wins over the template that also matches it, as in OpenAPI.
        ("OPTIONS", "/users/me", "GET, HEAD"),
        ("DELETE", "/users/me", "GET, HEAD"),
    ],
)
async def test_405_allow_lists_every_method_of_the_path(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    """Starlette would name only the first matching route's methods (`Allow: POST`)."""
    response = await client.request(method, path)
    assert_problem(response, 405)
    assert response.headers["allow"] == allow


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"driver error {sqlstate}")
        self.sqlstate = sqlstate


@pytest.fixture(scope="module")
async def failing_client(
    make_settings: MakeSettings, serve: Serve
) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose route raises the database error the test names."""
    app = create_app(make_settings())

    @app.get("/fail/{sqlstate}")
    async def fail(sqlstate: str) -> None:
        if sqlstate == "internal":
            raise InternalError("ROLLBACK", None, _DriverError(None))
        if sqlstate == "oserror":
            # Not the database's (app.database turns those into OperationalError): our bug.
            raise ConnectionResetError("driver error: a socket that is not PostgreSQL's")
        raise DBAPIError("SELECT 1", None, _DriverError(sqlstate))

    async with serve(app=app, raise_app_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [
        ("08006", 503),  # connection failure
        ("57P01", 503),  # admin shutdown (a fast shutdown terminating the session)
        ("57P03", 503),  # cannot connect now: the server is starting or shutting down
        ("53300", 503),  # too many connections
        ("57014", 503),  # statement_timeout
        ("40P01", 503),  # deadlock, resolved by a retry
        ("internal", 503),  # asyncpg's protocol confused by a connection dropped mid-query
        ("22021", 422),  # a byte sequence the encoding refuses (NUL)
        ("22003", 422),  # numeric value out of range
        ("23503", 409),  # foreign key: the owner was deleted meanwhile
        ("23505", 409),  # unique violation
        ("42P01", 500),  # undefined table: our bug, not the client's
        ("oserror", 500),  # any other OSError: not an outage of the database
    ],
)
async def test_database_errors_map_by_sqlstate(
    failing_client: httpx.AsyncClient, sqlstate: str, status: int
) -> None:
    response = await failing_client.get(f"/fail/{sqlstate}")
    problem = assert_problem(response, status)
    assert "driver error" not in response.text
    if status == 503:
        assert response.headers["retry-after"] == "1"
        assert problem["type"].endswith("/database-unavailable")
    if status == 500:
        assert problem["type"].endswith("/internal")
