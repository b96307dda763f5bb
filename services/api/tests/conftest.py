"""Real PostgreSQL and Redis for the API's tests: started here on free loopback ports, or taken
from DATABASE_URL / REDIS_URL when given (then the tests that stop a server are skipped).

Every test reaches the app through these fixtures: `client` (the session's app), or `serve(...)`
for an app of its own with other settings, its lifespan run like Uvicorn runs it.
"""

import io
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from app.observability.logging import JsonFormatter
from stack.servers import Servers, migrate, throwaway_servers
from stack.testing import asgi
from stack.testing.asgi import MakeSettings, Serve


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with throwaway_servers(os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")) as found:
        migrate(found.database_url)
        yield found


@pytest.fixture(scope="session")
def make_settings(servers: Servers) -> MakeSettings:
    """Settings for these servers, with overrides (field names of app.config.Settings)."""

    def make(**overrides: object) -> Settings:
        values: dict[str, Any] = {
            "app_env": "test",
            "database_url": servers.database_url,
            "redis_url": servers.redis_url,
            "replica_name": "test-replica",
            "db_pool_size": 5,
            "db_connect_timeout_seconds": 1.0,
            # Short, so fail-open and recovery tests don't wait long for the bypass to end.
            "cache_retry_after_seconds": 0.2,
            # Longer than production's 0.1 s: on a busy test machine a live Redis can take that
            # long to be scheduled, and a read would fail open where the test expects a hit. The
            # tests of a hung Redis set their own.
            "redis_socket_timeout_seconds": 1.0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture(scope="session")
def serve() -> Serve:
    """`async with serve(settings) as client:` an app of its own (stack.testing.asgi.serve)."""
    return asgi.serve


@pytest.fixture(scope="session")
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as c:
        yield c


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every record any logger writes meanwhile, as the replica's JSON lines (formatted as they
    are emitted, so the request id of the moment is in them)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test-replica"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
