"""app.database: pure reads (Reader) on pooled connections, outside a transaction, and every way
of losing the database surfacing as SQLAlchemy's OperationalError."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, event, func, select, text
from sqlalchemy.engine import AdaptedConnection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.database import Reader, create_engine
from app.models import User
from stack.procs import free_port
from stack.servers import Servers
from stack.testing.api import create_item, create_user
from stack.testing.asgi import MakeSettings

# The server process behind a connection: a new one means a new connection.
_BACKEND = select(func.pg_backend_pid().label("pid"))


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


async def test_rows_come_back_by_column_name(app: FastAPI, reader: Reader) -> None:
    by_email = select(User.id, User.email).where(User.email == bindparam("email"))
    assert await reader.rows(by_email, {"email": "nobody@example.com"}) == []
    async with app.state.session_factory() as session:
        session.add(User(email="fetch@example.com", name="f", token_hash="f" * 64))
        await session.commit()
    (row,) = await reader.rows(by_email, {"email": "fetch@example.com"})
    assert row["email"] == "fetch@example.com"


async def test_a_read_opens_no_transaction(engine: AsyncEngine, reader: Reader) -> None:
    sent: list[str] = []

    def log_queries(dbapi_connection: AdaptedConnection, record: object) -> None:
        # asyncpg's query logger sees the simple queries: BEGIN; and ROLLBACK; among them.
        dbapi_connection.driver_connection.add_query_logger(lambda query: sent.append(query.query))

    event.listen(engine.sync_engine, "connect", log_queries)
    for _ in range(3):
        rows = await reader.rows(select(text("42 AS answer")))
        assert [dict(row) for row in rows] == [{"answer": 42}]
    await asyncio.sleep(0)  # the logger is called soon after, not during, the query
    assert sent == []
    # The pool's connections stay transactional for everyone else (the writes' sessions).
    async with engine.connect() as connection:
        await connection.execute(select(text("43")))
    await asyncio.sleep(0)
    assert [query.split()[0] for query in sent] == ["BEGIN", "ROLLBACK;"]


async def test_a_killed_connection_is_a_503_error_and_the_pool_recovers(
    settings: Settings, reader: Reader
) -> None:
    (first,) = await reader.rows(_BACKEND)
    # What a database restart does to every pooled connection, done to ours from outside.
    killer = create_engine(settings)
    try:
        async with killer.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first["pid"]})
    finally:
        await killer.dispose()
    # asyncpg says InterfaceError ("the underlying connection is closed"): a 503 like any other.
    with pytest.raises(DBAPIError) as lost:
        await reader.rows(_BACKEND)
    assert lost.value.connection_invalidated
    (second,) = await reader.rows(_BACKEND)
    assert second["pid"] != first["pid"]


async def test_a_statement_error_keeps_the_connection(reader: Reader) -> None:
    (before,) = await reader.rows(_BACKEND)
    with pytest.raises(DBAPIError) as failed:
        await reader.rows(select(text("1 / 0")))
    assert not failed.value.connection_invalidated
    assert getattr(failed.value.orig, "sqlstate", None) == "22012"
    (after,) = await reader.rows(_BACKEND)
    assert after == before


async def test_a_cancelled_read_never_hands_its_connection_on(reader: Reader) -> None:
    (first,) = await reader.rows(_BACKEND)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await reader.rows(select(text("pg_sleep(2)")))
    (after,) = await reader.rows(_BACKEND)
    assert after != first


async def test_reads_never_open_more_connections_than_the_limit(engine: AsyncEngine) -> None:
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda *_: opened.append(1))
    reader = Reader(engine, limit=2)
    slow = select(text("pg_sleep(0.05)"))
    await asyncio.gather(*(reader.rows(slow) for _ in range(12)))
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


async def test_a_database_that_refuses_connections_is_an_operational_error(
    make_settings: MakeSettings,
) -> None:
    """Not the OSError asyncpg raises: the one exception the 503 handler maps, nothing guessed."""
    engine = create_engine(
        make_settings(database_url=f"postgresql+asyncpg://app:x@127.0.0.1:{free_port()}/app")
    )
    try:
        with pytest.raises(OperationalError) as refused:
            await Reader(engine, limit=1).rows(select(text("1")))
        assert isinstance(refused.value.orig, Exception)
        assert isinstance(refused.value.orig.__cause__, ConnectionRefusedError)
        assert "cannot connect to PostgreSQL: ConnectionRefusedError" in str(refused.value)
        with pytest.raises(OperationalError):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


async def test_a_statement_the_server_never_answers_is_an_operational_error(
    servers: Servers, make_settings: MakeSettings
) -> None:
    """asyncpg's command_timeout raises a bare TimeoutError (an OSError): app.database's
    handle_error makes it the OperationalError of a lost connection, which is discarded."""
    if servers.postgres is None:
        pytest.skip("DATABASE_URL was given: this test needs a PostgreSQL it may signal")
    # statement_timeout 0.2 s, so asyncpg gives up after 1.2 s; the server never gets to it.
    engine = create_engine(make_settings(db_statement_timeout_ms=200))
    reader = Reader(engine, limit=1)
    try:
        (hung,) = await reader.rows(_BACKEND)
        os.kill(hung["pid"], signal.SIGSTOP)  # the server process behind our one connection
        try:
            with pytest.raises(OperationalError) as lost:
                await reader.rows(select(text("1")))
        finally:
            os.kill(hung["pid"], signal.SIGCONT)
        assert lost.value.connection_invalidated
        assert isinstance(lost.value.orig, TimeoutError)
        (fresh,) = await reader.rows(_BACKEND)
        assert fresh["pid"] != hung["pid"]
    finally:
        await engine.dispose()
