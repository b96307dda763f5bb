"""The stack's data for the run (a user and its items) and the request of every stack row."""

# ruff: noqa: S310 - loopback URLs built here
from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from bench.config import Options
from bench.locust_driver import Request
from bench.native_stack import BenchStack
from bench.wrk import fresh_ids_script, post_script
from stack.topology import HOST


def create_owner(base_url: str) -> tuple[int, str]:
    body = json.dumps({"email": f"bench-{time.time_ns()}@example.com", "name": "bench"}).encode()
    request = urllib.request.Request(
        f"{base_url}/users", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        created = json.loads(response.read())
    return int(created["id"]), str(created["token"])


async def insert_items(connection: asyncpg.Connection, owner: int, count: int) -> range:
    """`count` items of `owner` in one statement instead of `count` POSTs: a second, not minutes."""
    first, last = await connection.fetchrow(
        """WITH created AS (
             INSERT INTO items (name, description, price, owner_id)
             SELECT 'item ' || g, 'seeded by make bench', (g % 10000) / 100.0, $1
             FROM generate_series(1, $2) AS g
             RETURNING id)
           SELECT min(id), max(id) FROM created""",
        owner,
        count,
    )
    await connection.execute("ANALYZE items")
    return range(int(first), int(last) + 1)


async def seed_items(stack: BenchStack, owner: int, count: int) -> range:
    connection = await asyncpg.connect(
        host=HOST,
        port=stack.topology.ports["postgres"],
        user=stack.secret("POSTGRES_USER"),
        password=stack.secret("POSTGRES_PASSWORD"),
        database=stack.secret("POSTGRES_DB"),
        timeout=10,
    )
    try:
        return await insert_items(connection, owner, count)
    finally:
        await connection.close()


def seed(stack: BenchStack, folder: Path, options: Options) -> dict[str, Request]:
    """A user and `options.items` items, and the request of every stack row."""
    owner, token = create_owner(stack.nginx)
    ids = asyncio.run(seed_items(stack, owner, options.items))
    scripts = folder / "lua"
    scripts.mkdir(exist_ok=True)
    body = json.dumps({"name": "bench item", "description": "made by make bench", "price": 9.5})
    # wrk uses the ids from the start of the range, Locust those from the middle: both miss.
    half = ids[0] + len(ids) // 2
    print(f"stack: {options.replicas} replicas, {len(ids):,} items seeded", flush=True)
    return {
        "cached": Request(f"/items/{ids[0]}"),
        "uncached": Request(
            "/items/", fresh_ids=(half, ids[-1]), script=fresh_ids_script(scripts, ids[0], half - 1)
        ),
        "page": Request("/items"),
        "create": Request(
            "/items",
            method="POST",
            body=body,
            token=token,
            script=post_script(scripts, token, body),
        ),
    }
