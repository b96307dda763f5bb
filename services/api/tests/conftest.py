"""Real PostgreSQL and Redis for the tests: started here on free loopback ports, or taken from
DATABASE_URL / REDIS_URL when given (then the tests that stop a server are skipped)."""

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from native.servers import PostgresServer, RedisServer, free_port

API_DIR = Path(__file__).resolve().parents[1]


@dataclass
class Servers:
    database_url: str
    redis_url: str
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None


def migrate(database_url: str) -> None:
    """Apply the migrations the way deployments do: `alembic upgrade head` in a process."""
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(API_DIR / "alembic.ini"), "upgrade", "head"],
        cwd=API_DIR,
        env={**os.environ, "DATABASE_URL": database_url},
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    given_db, given_redis = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    postgres = redis = None
    with tempfile.TemporaryDirectory(prefix="api-tests-") as tmp:
        if not given_db:
            os.chmod(tmp, 0o755)
            postgres = PostgresServer(Path(tmp) / "pg" / "data", free_port())
            postgres.init()
            postgres.start()
            postgres.create_database()
        if not given_redis:
            redis = RedisServer(free_port())
            redis.start()
        found = Servers(
            database_url=given_db or postgres.url,  # type: ignore[union-attr]
            redis_url=given_redis or redis.url,  # type: ignore[union-attr]
            postgres=postgres,
            redis=redis,
        )
        try:
            migrate(found.database_url)
            yield found
        finally:
            if redis is not None:
                redis.stop()
            if postgres is not None and postgres.is_running():
                postgres.stop()


def make_settings(servers: Servers, **overrides: object) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "database_url": servers.database_url,
        "redis_url": servers.redis_url,
        "replica_name": "test-replica",
        "db_pool_size": 5,
        "db_connect_timeout_seconds": 1.0,
        # Short, so fail-open and recovery tests don't wait long for the bypass to end.
        "cache_retry_after_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def settings(servers: Servers) -> Settings:
    return make_settings(servers)


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
