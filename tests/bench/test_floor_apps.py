"""The floor rows' apps (bench/apps/floor.py) do the work their labels claim, against a real
PostgreSQL and Redis: a floor that skipped the Redis read, the instrumentation or the fill would
make every ratio beside it look better than the libraries are."""

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis

from bench.apps import floor
from bench.floor_rows import seed_floor
from stack.servers import Servers, migrate, throwaway_servers


@pytest.fixture(scope="module")
def floor_servers() -> Iterator[Servers]:
    with throwaway_servers() as servers:
        migrate(servers.database_url)
        yield servers


@pytest.fixture
def floor_env(floor_servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Servers:
    """The settings the floor apps read, as `make bench` exports them to their process."""
    monkeypatch.setenv("DATABASE_URL", floor_servers.database_url)
    monkeypatch.setenv("REDIS_URL", floor_servers.redis_url)
    return floor_servers


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as running:
        transport = httpx.ASGITransport(app=running.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
            yield client


async def test_the_cached_floor_answers_the_entry_from_redis(floor_env: Servers) -> None:
    async for client in _client(floor.build(instrumented=False)):
        first = await client.get("/items/1")
        assert first.status_code == 200
        assert first.content == floor.ENTRY
        # Not a constant: another id reads its own (absent) key.
        assert (await client.get("/items/2")).content == b""


async def test_the_instrumented_floor_records_the_api_s_series(floor_env: Servers) -> None:
    app = floor.build(instrumented=True)
    async for client in _client(app):
        for _ in range(3):
            assert (await client.get("/items/1")).status_code == 200
    labels = {"handler": "/items/{item_id}", "method": "GET", "status": "200"}
    assert app.state.registry.get_sample_value("http_requests_total", labels) == 3
    latency = {"handler": "/items/{item_id}", "method": "GET"}
    assert app.state.registry.get_sample_value("http_request_duration_seconds_count", latency) == 3


async def test_the_uncached_floor_reads_postgresql_and_fills_redis(floor_env: Servers) -> None:
    ids = await seed_floor(floor_env.database_url, 3)
    assert len(ids) == 3
    first, last = ids[0], ids[-1]
    redis = Redis.from_url(floor_env.redis_url)
    try:
        await redis.delete(f"item:{first}")
        async for client in _client(floor.build_uncached()):
            answer = await client.get(f"/items/{first}")
            assert answer.status_code == 200
            assert answer.json()["id"] == first
            assert answer.json()["name"].startswith("item ")
            # The fill stored what was answered, so the next read of it is a hit.
            assert await redis.get(f"item:{first}") == answer.content
            assert (await client.get(f"/items/{last + 1000}")).status_code == 404
    finally:
        await redis.aclose()
