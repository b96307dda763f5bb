"""The libraries' floor under a read (bench/apps/floor.py): each floor app served as the hello is,
on a PostgreSQL and a Redis of its own, and measured against the hello side by side."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import redis

from bench.ceilings import ceiling_app
from bench.config import FLOOR_APPS, FLOORS, LABELS, RATIO_PAIRS, BenchError, Deadline, Options
from bench.measure import HelloReference, Row, measure, ratio_pair
from bench.procs import Group
from bench.seed import insert_items
from bench.wrk import fresh_ids_script
from stack.servers import migrate, throwaway_servers


def run_floors(
    options: Options, folder: Path, deadline: Deadline, hello: HelloReference
) -> list[Row]:
    """The floor rows, each as the target rows are: RATIO_PAIRS (hello, floor) pairs of runs, on a
    PostgreSQL and a Redis of their own (the uncached floor misses on every request: wrk walks
    fresh ids, and Redis is emptied before each run)."""
    wanted = [name for name in FLOORS if options.wants(name)]
    if not wanted:
        return []
    rows = []
    with throwaway_servers() as servers:
        migrate(servers.database_url)
        ids = asyncio.run(seed_floor(servers.database_url, options.items))
        fresh = fresh_ids_script(folder, ids[0], ids[-1])
        env = {"DATABASE_URL": servers.database_url, "REDIS_URL": servers.redis_url}

        def flush() -> None:
            with redis.Redis.from_url(servers.redis_url, socket_timeout=5) as client:
                client.flushdb()

        for name in wanted:
            deadline.check(RATIO_PAIRS * 2 * (options.duration + 1) + options.warmup + 30, name)
            target, path = FLOOR_APPS[name]
            script, before = (fresh, flush) if name == "floor_uncached" else (None, None)
            with ceiling_app(f"bench.apps.floor:{target}", path, env) as (url, pid):
                server = Group("server", [pid])
                reference = hello.measure(options.duration, options.connections)
                result, used = measure(
                    name, url, [server], "server", options, script=script, before_run=before
                )
                if result.errors:
                    raise BenchError(f"{name}: {result.errors} requests failed; a floor must not")
                row = Row(name, LABELS[name], "server", result, used, hello_us=reference)
                for _ in range(RATIO_PAIRS - 1):
                    row.more_ratios.append(
                        ratio_pair(url, script, server, hello, options, before_run=before)
                    )
            rows.append(row)
    return rows


async def seed_floor(database_url: str, count: int) -> range:
    """A user and `count` items of it, as the stack's are seeded (bench/seed.py)."""
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        owner = await connection.fetchval(
            "INSERT INTO users (email, name, token_hash)"
            " VALUES ('floor@example.com', 'floor', repeat('0', 64)) RETURNING id"
        )
        return await insert_items(connection, owner, count)
    finally:
        await connection.close()
