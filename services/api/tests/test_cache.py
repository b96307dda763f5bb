import asyncio

import httpx
from fastapi import FastAPI
from redis.asyncio import ConnectionPool, Redis
from sqlalchemy import select

from app.cache import ItemCache
from app.models import Item
from app.routes.items import _item_json
from stack.servers import Servers
from stack.testing.api import create_item, create_user


async def test_miss_then_hit_then_invalidated_by_write(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    assert (await client.get(url)).headers["x-cache"] == "miss"
    hit = await client.get(url)
    assert hit.headers["x-cache"] == "hit"
    assert hit.json() == item

    await client.patch(url, json={"name": "renamed"}, headers=owner.auth)
    after_write = await client.get(url)
    assert after_write.headers["x-cache"] == "miss"
    assert after_write.json()["name"] == "renamed"
    assert (await client.get(url)).json()["name"] == "renamed"

    await client.delete(url, headers=owner.auth)
    assert (await client.get(url)).status_code == 404


async def _read_row(app: FastAPI, item_id: int) -> bytes:
    async with app.state.session_factory() as session:
        row = await session.scalar(select(Item).where(Item.id == item_id))
        assert row is not None
        return _item_json(row)


async def test_read_racing_a_write_does_not_recache_the_old_value(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The interleaving that breaks naive cache-aside, forced step by step."""
    cache: ItemCache = app.state.cache
    owner = await create_user(client)
    item = await create_item(client, owner, name="old")

    # Reader misses and reads the old row from PostgreSQL...
    cached, generation = await cache.get(item["id"])
    assert cached is None
    assert generation is not None
    old_row = await _read_row(app, item["id"])
    # ...a writer commits and invalidates before the reader stores what it read...
    patched = await client.patch(f"/items/{item['id']}", json={"name": "new"}, headers=owner.auth)
    assert patched.status_code == 200
    # ...so the reader's late fill is refused, and nobody sees the old name again.
    assert await cache.fill(item["id"], generation, old_row) is False
    assert (await client.get(f"/items/{item['id']}")).json()["name"] == "new"
    assert (await client.get(f"/items/{item['id']}")).json()["name"] == "new"


async def test_fill_before_the_writes_invalidation_is_removed_by_it(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    cache: ItemCache = app.state.cache
    owner = await create_user(client)
    item = await create_item(client, owner, name="old")
    _, generation = await cache.get(item["id"])
    assert generation is not None
    assert await cache.fill(item["id"], generation, await _read_row(app, item["id"])) is True
    await client.patch(f"/items/{item['id']}", json={"name": "new"}, headers=owner.auth)
    response = await client.get(f"/items/{item['id']}")
    assert response.headers["x-cache"] == "miss"
    assert response.json()["name"] == "new"


async def test_concurrent_reads_and_writes_end_consistent(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"

    async def reader() -> None:
        for _ in range(20):
            assert (await client.get(url)).status_code == 200

    async def writer() -> None:
        for i in range(10):
            response = await client.patch(url, json={"name": f"v{i}"}, headers=owner.auth)
            assert response.status_code == 200

    await asyncio.gather(reader(), reader(), reader(), writer())
    # Twice: the first may fill the cache, the second must serve what the last write committed.
    for _ in range(2):
        assert (await client.get(url)).json()["name"] == "v9"


async def test_every_connection_busy_skips_the_cache_for_one_request_only(
    app: FastAPI, client: httpx.AsyncClient, servers: Servers
) -> None:
    """Unlike an error from Redis, it opens no bypass window: Redis itself is fine."""
    owner = await create_user(client)
    item = await create_item(client, owner)
    redis = Redis.from_pool(ConnectionPool.from_url(servers.redis_url, max_connections=1))
    cache = ItemCache(redis, app.state.metrics, ttl_seconds=60, retry_after_seconds=60)
    registry = app.state.metrics.registry

    def errors() -> float:
        value = registry.get_sample_value("api_cache_lookups_total", {"result": "error"})
        assert isinstance(value, float)
        return value

    before = errors()
    try:
        # The pool's one connection waits in BLPOP while the cache asks for another.
        blocking = asyncio.ensure_future(redis.blpop(["nothing-here"], timeout=0.3))
        await asyncio.sleep(0.05)
        assert await cache.get(item["id"]) == (None, None)
        assert errors() == before + 1
        await blocking
        # Redis answered this time: no bypass window was opened.
        assert (await cache.get(item["id"]))[1] is not None
    finally:
        await redis.aclose()
