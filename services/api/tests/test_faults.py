"""Real faults: Redis and PostgreSQL are stopped and started again, not mocked."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from stack.procs import free_port
from stack.servers import Servers
from stack.testing.api import assert_problem, create_item, create_user
from stack.testing.asgi import MakeSettings, Serve


def _cache_errors(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith('api_cache_lookups_total{result="error"}'):
            return float(line.split()[-1])
    raise AssertionError("api_cache_lookups_total{result=error} missing")


async def test_cache_fails_open_when_redis_is_stopped(
    servers: Servers, client: httpx.AsyncClient
) -> None:
    if servers.redis is None:
        pytest.skip("REDIS_URL was given: this test needs a Redis it may stop")
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    await client.get(url)  # cached now
    errors_before = _cache_errors((await client.get("/metrics")).text)

    servers.redis.stop()
    try:
        for _ in range(3):
            response = await client.get(url)
            assert response.status_code == 200
            assert response.json() == item
            assert response.headers["x-cache"] == "miss"
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"]["cache"]["status"] == "down"
        patched = await client.patch(url, json={"name": "while-down"}, headers=owner.auth)
        assert patched.status_code == 200
        assert _cache_errors((await client.get("/metrics")).text) > errors_before
    finally:
        servers.redis.start()

    # The cache comes back by itself once the bypass window ends.
    await asyncio.sleep(0.3)
    assert (await client.get(url)).json()["name"] == "while-down"
    hit = await client.get(url)
    assert hit.headers["x-cache"] == "hit"
    assert hit.json()["name"] == "while-down"
    assert (await client.get("/health/ready")).json()["checks"]["cache"]["status"] == "up"


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A listener that accepts connections and never answers: a hung Redis, for real."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.fixture
async def slow_cache_client(
    make_settings: MakeSettings, serve: Serve, black_hole: int
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{black_hole}/0",
        redis_socket_timeout_seconds=0.2,
        cache_retry_after_seconds=5,
    )
    async with serve(settings) as client:
        yield client


async def test_a_hung_redis_costs_at_most_one_socket_timeout(
    client: httpx.AsyncClient, slow_cache_client: httpx.AsyncClient
) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    start = time.monotonic()
    first = await slow_cache_client.get(f"/items/{item['id']}")
    first_took = time.monotonic() - start
    assert first.status_code == 200
    assert first.json() == item
    assert first_took < 2.0  # the 0.2 s socket timeout, plus the query, with slack for a slow CI
    # Within the bypass window the cache is skipped, so later reads don't wait at all.
    start = time.monotonic()
    for _ in range(5):
        assert (await slow_cache_client.get(f"/items/{item['id']}")).status_code == 200
    assert time.monotonic() - start < first_took * 5
    ready = await slow_cache_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["cache"]["status"] == "down"


async def test_postgres_down_is_503_and_recovers(
    servers: Servers, client: httpx.AsyncClient
) -> None:
    if servers.postgres is None:
        pytest.skip("DATABASE_URL was given: this test needs a PostgreSQL it may stop")
    owner = await create_user(client)
    item = await create_item(client, owner)
    cached_url = f"/items/{item['id']}"
    await client.get(cached_url)

    servers.postgres.stop()
    try:
        start = time.monotonic()
        problem = assert_problem(await client.get("/items/987654321"), 503)
        assert problem["type"].endswith("database-unavailable")
        assert "Traceback" not in str(problem)
        for _ in range(3):
            assert_problem(await client.post("/users", json={"email": "a@b.co", "name": "x"}), 503)
        assert time.monotonic() - start < 10  # fast answers, no hung requests
        ready = await client.get("/health/ready")
        assert_problem(ready, 503)
        assert ready.json()["checks"]["database"]["status"] == "down"
        # A cached item is still served while PostgreSQL is away.
        assert (await client.get(cached_url)).status_code == 200
    finally:
        servers.postgres.start()

    # The pool recovers by itself: a bounded number of tries, no restart of the app.
    statuses = []
    for _ in range(10):
        response = await client.get("/health/ready")
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        await asyncio.sleep(0.5)
    assert statuses[-1] == 200, statuses
    created = await client.post("/users", json={"email": f"back-{item['id']}@b.co", "name": "x"})
    assert created.status_code == 201
    # Nothing acknowledged before the outage was lost.
    assert (await client.get(f"/users/{owner.id}")).status_code == 200
