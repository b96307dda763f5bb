from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from stack.testing.api import assert_problem
from stack.testing.asgi import MakeSettings, Serve


@pytest.fixture
async def crashing_client(
    make_settings: MakeSettings, serve: Serve
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret-internal-detail")

    # The server error middleware re-raises after answering, as under Uvicorn.
    async with serve(app=app, raise_app_exceptions=False) as client:
        yield client


async def test_unexpected_exception_is_a_500_problem_that_leaks_nothing(
    crashing_client: httpx.AsyncClient,
) -> None:
    """What the server logs about it: test_server (once, with the request id and traceback)."""
    response = await crashing_client.get("/boom", headers={"X-Request-ID": "crash-1"})
    problem = assert_problem(response, 500)
    assert "secret-internal-detail" not in response.text
    assert "Traceback" not in response.text
    assert problem["request_id"] == "crash-1"


async def test_docs_can_be_turned_off(make_settings: MakeSettings, serve: Serve) -> None:
    for enabled, status in ((True, 200), (False, 404)):
        async with serve(make_settings(docs_enabled=enabled)) as client:
            assert (await client.get("/docs")).status_code == status
            assert (await client.get("/openapi.json")).status_code == status


def test_placeholder_secrets_are_refused_in_production() -> None:
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        Settings(_env_file=None, app_env="production", postgres_password="changethis")
    assert Settings(_env_file=None, app_env="production", postgres_password="s3cr3t-Value")
