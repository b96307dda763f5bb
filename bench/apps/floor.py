"""The libraries' floor under a read: what `GET /items/{id}` costs with nothing of the stack's own
but the libraries it is built on.

FastAPI routes an int path parameter, one `MGET` of the entry and its generation goes through
redis-py with the API's own client (app.cache.create_redis: hiredis, its pool, timeouts and retry
policy), and the bytes go back. `instrumented` adds prometheus-fastapi-instrumentator exactly as
the API configures it (app.observability.metrics.instrument). FastAPI's defaults are the hello's,
so "times hello" reads as what the libraries add to the unit; the cached row's ratio above the
floor's is what the stack's own features cost (request ids and access log, drain, body deadline,
HEAD, the dependency aliases, the ETag). `uncached` is the miss: the same MGET, then the row
through SQLAlchemy Core on an AUTOCOMMIT connection of the API's engine (asyncpg), pydantic's
serialisation, and the generation-checked fill through redis-py's registered Lua script.

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.apps.serve bench.apps.floor:app ...
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CollectorRegistry
from sqlalchemy import bindparam, select

from app.cache import REDIS_MAX_CONNECTIONS, SET_IF_GENERATION, create_redis
from app.config import Settings
from app.database import create_engine
from app.models import Item
from app.observability.metrics import instrument
from app.schemas.item import ItemPublic

# What the API caches for an item, about the size of one.
ENTRY = (
    b'{"id":1,"name":"item 1","description":"seeded by make bench","price":12.5,'
    b'"owner_id":1,"version":1}'
)


def build(*, instrumented: bool) -> FastAPI:
    # A longer connect timeout than the API's 0.1 s: the API fails open when 64 connections
    # open at once on a busy machine, a floor must not fail at all. A timeout costs the same CPU
    # per command whatever its length.
    redis = create_redis(Settings(redis_socket_timeout_seconds=2.0))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await redis.set("item:1", ENTRY)
        # Every connection wrk's 64 will need, opened before the first request.
        await asyncio.gather(*(redis.ping() for _ in range(REDIS_MAX_CONNECTIONS)))
        yield
        await redis.aclose()

    floor = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @floor.get("/items/{item_id}")
    async def read(item_id: int) -> Response:
        entry, _ = await redis.mget((f"item:{item_id}", f"item:{item_id}:gen"))
        return Response(entry, media_type="application/json")

    if instrumented:
        floor.state.registry = CollectorRegistry()
        instrument(floor, floor.state.registry)
    return floor


BY_ID = select(Item).where(Item.id == bindparam("id"))


def build_uncached() -> FastAPI:
    # A PostgreSQL connection for each of wrk's 64: the API bounds its reads to its pool with a
    # semaphore (app.database.Reader), a floor must neither wait 2 s for a connection nor fail.
    settings = Settings(redis_socket_timeout_seconds=2.0, db_pool_size=64, db_max_overflow=0)
    redis = create_redis(settings)
    # The API's fill: stored only if the generation is still the one the read saw.
    fill = redis.register_script(SET_IF_GENERATION)
    engine = create_engine(settings).execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.gather(*(redis.ping() for _ in range(REDIS_MAX_CONNECTIONS)))
        yield
        await redis.aclose()
        await engine.dispose()

    floor = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @floor.get("/items/{item_id}")
    async def read(item_id: int) -> Response:
        keys = (f"item:{item_id}", f"item:{item_id}:gen")
        # bytes: the client does not decode replies, as the API's does not.
        found = cast(list[bytes | None], await redis.mget(keys))
        entry, generation = found
        if entry is None:
            async with engine.connect() as connection:
                rows = (await connection.execute(BY_ID, {"id": item_id})).mappings().all()
            if not rows:
                raise HTTPException(404)
            entry = ItemPublic.model_validate(rows[0]).model_dump_json().encode()
            await fill(keys=keys, args=((generation or b"").decode(), entry, 60))
        return Response(entry, media_type="application/json")

    return floor


app = build(instrumented=False)
instrumented = build(instrumented=True)
uncached = build_uncached()
