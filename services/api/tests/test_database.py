"""app.database.fetch: pure reads on pooled connections, failing the way the ORM's reads do."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.database import Read, create_engine, fetch
from app.models import Item, User


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


def test_reads_compile_to_asyncpg_placeholders_in_bindparam_order() -> None:
    read = Read.of(
        select(Item).where(Item.owner_id == bindparam("owner"), Item.id > bindparam("after"))
    )
    assert read.params == ("owner", "after")
    assert "$1" in read.sql
    assert "$2" in read.sql
    assert "items.price" in read.sql  # every mapped column, from the model


async def test_fetch_returns_rows_by_column_name(app: FastAPI, engine: AsyncEngine) -> None:
    by_email = Read.of(select(User.id, User.email).where(User.email == bindparam("email")))
    assert await fetch(engine, by_email, email="nobody@example.com") == []
    async with app.state.session_factory() as session:
        session.add(User(email="fetch@example.com", name="f", token_hash="f" * 64))
        await session.commit()
    (row,) = await fetch(engine, by_email, email="fetch@example.com")
    assert row["email"] == "fetch@example.com"


async def test_a_killed_connection_is_a_503_error_and_the_pool_recovers(
    settings: Settings, engine: AsyncEngine
) -> None:
    backend = Read.of(select(text("pg_backend_pid()")))
    (first,) = await fetch(engine, backend)
    # What a database restart does to every pooled connection, done to ours from outside.
    killer = create_engine(settings)
    try:
        async with killer.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first[0]})
    finally:
        await killer.dispose()
    with pytest.raises(OperationalError) as lost:
        await fetch(engine, backend)
    assert lost.value.connection_invalidated
    (second,) = await fetch(engine, backend)
    assert second[0] != first[0]


async def test_a_statement_error_keeps_the_connection(engine: AsyncEngine) -> None:
    division = Read.of(select(text("1 / 0")))
    with pytest.raises(DBAPIError) as failed:
        await fetch(engine, division)
    assert not failed.value.connection_invalidated
    assert getattr(failed.value.orig, "sqlstate", None) == "22012"
    one = Read.of(select(text("1")))
    assert [tuple(row) for row in await fetch(engine, one)] == [(1,)]


async def test_a_cancelled_read_never_hands_its_connection_on(engine: AsyncEngine) -> None:
    backend = Read.of(select(text("pg_backend_pid()")))
    (first,) = await fetch(engine, backend)
    slow = Read.of(select(text("pg_sleep(2)")))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await fetch(engine, slow)
    (after,) = await fetch(engine, backend)
    assert after[0] != first[0]
