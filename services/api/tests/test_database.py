"""app.database.Reader: pure reads on pooled connections, failing the way the ORM's reads do."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, event, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.database import Read, Reader, create_engine
from app.models import Item, User
from stack.servers import Servers
from stack.testing.api import create_item, create_user


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def reader(engine: AsyncEngine) -> Reader:
    return Reader(engine, limit=5)


def test_reads_compile_to_asyncpg_placeholders_in_bindparam_order() -> None:
    read = Read.of(
        select(Item).where(Item.owner_id == bindparam("owner"), Item.id > bindparam("after"))
    )
    assert read.params == ("owner", "after")
    assert "$1" in read.sql
    assert "$2" in read.sql
    assert "items.price" in read.sql  # every mapped column, from the model


async def test_fetch_returns_rows_by_column_name(app: FastAPI, reader: Reader) -> None:
    by_email = Read.of(select(User.id, User.email).where(User.email == bindparam("email")))
    assert await reader.fetch(by_email, email="nobody@example.com") == []
    async with app.state.session_factory() as session:
        session.add(User(email="fetch@example.com", name="f", token_hash="f" * 64))
        await session.commit()
    (row,) = await reader.fetch(by_email, email="fetch@example.com")
    assert row["email"] == "fetch@example.com"


async def test_a_killed_connection_is_a_503_error_and_the_pool_recovers(
    settings: Settings, reader: Reader
) -> None:
    backend = Read.of(select(text("pg_backend_pid()")))
    (first,) = await reader.fetch(backend)
    # What a database restart does to every pooled connection, done to ours from outside.
    killer = create_engine(settings)
    try:
        async with killer.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first[0]})
    finally:
        await killer.dispose()
    with pytest.raises(OperationalError) as lost:
        await reader.fetch(backend)
    assert lost.value.connection_invalidated
    (second,) = await reader.fetch(backend)
    assert second[0] != first[0]


async def test_a_statement_error_keeps_the_connection(reader: Reader) -> None:
    division = Read.of(select(text("1 / 0")))
    with pytest.raises(DBAPIError) as failed:
        await reader.fetch(division)
    assert not failed.value.connection_invalidated
    assert getattr(failed.value.orig, "sqlstate", None) == "22012"
    one = Read.of(select(text("1")))
    assert [tuple(row) for row in await reader.fetch(one)] == [(1,)]


async def test_a_cancelled_read_never_hands_its_connection_on(reader: Reader) -> None:
    backend = Read.of(select(text("pg_backend_pid()")))
    (first,) = await reader.fetch(backend)
    slow = Read.of(select(text("pg_sleep(2)")))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await reader.fetch(slow)
    (after,) = await reader.fetch(backend)
    assert after[0] != first[0]


async def test_reads_never_open_more_connections_than_the_limit(engine: AsyncEngine) -> None:
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda *_: opened.append(1))
    reader = Reader(engine, limit=2)
    slow = Read.of(select(text("pg_sleep(0.05)")))
    await asyncio.gather(*(reader.fetch(slow) for _ in range(12)))
    assert len(opened) <= 2


async def test_reads_answer_200_or_503_never_500_while_postgres_stops_and_starts(
    servers: Servers, client: httpx.AsyncClient
) -> None:
    """What `make chaos` does to GET /items, in small: the database goes away mid-traffic."""
    if servers.postgres is None:
        pytest.skip("DATABASE_URL was given: this test needs a PostgreSQL it may stop")
    postgres = servers.postgres
    owner = await create_user(client)
    item = await create_item(client, owner)
    await client.delete(f"/items/{item['id']}", headers=owner.auth)  # never cached again
    urls = ["/items", f"/items?owner_id={owner.id}", f"/items/{item['id']}"]
    statuses: list[int] = []

    async def traffic(until: asyncio.Event) -> None:
        while not until.is_set():
            responses = await asyncio.gather(*(client.get(url) for url in urls * 4))
            statuses.extend(response.status_code for response in responses)

    stopped = asyncio.Event()
    load = asyncio.create_task(traffic(stopped))
    try:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(0.5)
    finally:
        stopped.set()
        await load
        await asyncio.to_thread(postgres.start)
    assert 503 in statuses
    assert set(statuses) <= {200, 404, 503}, sorted(set(statuses))
    for _ in range(20):
        if (await client.get("/items")).status_code == 200:
            break
        await asyncio.sleep(0.25)
    assert (await client.get("/items")).status_code == 200
