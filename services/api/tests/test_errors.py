import io
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.observability.logging import JsonFormatter
from tests.conftest import Servers, make_settings
from tests.utils.problems import assert_problem


@pytest.fixture
async def crashing_client(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(servers))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret-internal-detail")

    async with LifespanManager(app):
        # The server error middleware re-raises after answering, as under Uvicorn.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as c:
            yield c


async def test_unexpected_exception_is_a_500_problem_that_leaks_nothing(
    crashing_client: httpx.AsyncClient,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test-replica"))
    logging.getLogger("app.errors").addHandler(handler)
    try:
        response = await crashing_client.get("/boom", headers={"X-Request-ID": "crash-1"})
    finally:
        logging.getLogger("app.errors").removeHandler(handler)
    problem = assert_problem(response, 500)
    assert "secret-internal-detail" not in response.text
    assert "Traceback" not in response.text
    assert problem["request_id"] == "crash-1"
    logged = stream.getvalue()
    assert "secret-internal-detail" in logged
    assert "Traceback" in logged
    assert "crash-1" in logged


async def test_docs_can_be_turned_off(servers: Servers) -> None:
    for enabled, status in ((True, 200), (False, 404)):
        app = create_app(make_settings(servers, docs_enabled=enabled))
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as c:
                assert (await c.get("/docs")).status_code == status
                assert (await c.get("/openapi.json")).status_code == status


def test_placeholder_secrets_are_refused_in_production(servers: Servers) -> None:
    from app.config import Settings

    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        Settings(_env_file=None, app_env="production", postgres_password="changethis")
    assert Settings(_env_file=None, app_env="production", postgres_password="s3cr3t-Value")
