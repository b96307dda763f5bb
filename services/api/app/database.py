"""The async engine and session factory; connections come from one pool per replica.

Pure reads (`Reader.fetch`) take a connection from the same pool but run their one statement with
asyncpg itself, outside a transaction. Through the ORM a primary-key lookup is a BEGIN, the
SELECT and a ROLLBACK, and SQLAlchemy's execution layer (greenlet hop, cursor adapter, result
processing) costs several times what asyncpg does: `make bench` measured the ORM's lookup at
about 4x the CPU of the same lookup here. A single statement needs no transaction to be
consistent, and asyncpg keeps its own prepared-statement cache per connection. Writes stay on
the ORM, where the unit of work and the transaction earn their cost.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from app.config import Settings

# What asyncpg raises when the connection itself is gone or in an unknown state: closed by the
# server, reset, cut off by command_timeout, or interrupted mid-protocol.
_CONNECTION_LOST = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError,
                    TimeoutError)  # fmt: skip
# Server errors that end the session too: connection exceptions (08) and operator intervention
# (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
_FATAL_SQLSTATES = ("08", "57P")
_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        # No pre-ping: it costs a round trip per checkout. A dead connection is detected on use,
        # SQLAlchemy then invalidates the whole pool, and the request answers 503.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={
            # asyncpg waits 60 s by default; a down database must answer 503 quickly instead.
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_statement_timeout_ms / 1000 + 1
            if settings.db_statement_timeout_ms
            else None,
            "server_settings": {
                "application_name": f"api:{settings.replica_name}",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: handlers serialise objects after commit without another SELECT.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@dataclass(frozen=True)
class Read:
    """A read-only statement, compiled once from the models into asyncpg's SQL ($1, $2...)."""

    sql: str
    params: tuple[str, ...]  # the bindparam names, in $n order

    @classmethod
    def of(cls, statement: Select[*tuple[Any, ...]]) -> Self:
        compiled = statement.compile(dialect=_DIALECT)
        return cls(str(compiled), tuple(compiled.positiontup or ()))


class Reader:
    """Pure reads on the engine's pool, never more at once than the pool holds connections.

    Past the pool's size SQLAlchemy opens overflow connections and closes each one as soon as it
    comes back, so a burst of reads (a replica sees 32 at once under `make bench`) opened about 25
    connections a second, each with its TLS probe and authentication; and a read waiting in the
    pool's own queue costs a task per wait. Waiting on this semaphore costs almost nothing: it
    cut an uncached read's CPU by a quarter and raised its throughput by a third (make bench).
    Overflow stays for the ORM's writes.
    """

    def __init__(self, engine: AsyncEngine, limit: int) -> None:
        self.engine = engine
        self._slots = asyncio.Semaphore(limit)

    async def fetch(self, read: Read, **params: object) -> list[Any]:
        """Rows (asyncpg Records, read by column name) of `read` with its bindparams filled in.

        Failures surface as SQLAlchemy's DBAPIError, as they would through the ORM, so the
        problem handlers answer a lost database with 503 and anything else by its SQLSTATE.
        """
        args = [params[name] for name in read.params]
        async with self._slots:
            return await self._fetch(read.sql, args)

    async def _fetch(self, sql: str, args: list[object]) -> list[Any]:
        # A bare pool checkout: an engine.connect() around it would cost as much as the query.
        try:
            pooled = await self.engine.raw_connection()
        except (
            self.engine.dialect.loaded_dbapi.Error,
            asyncpg.PostgresError,
            *_CONNECTION_LOST,
        ) as exc:
            # The pool hands connect errors (database down, starting or shutting down) over as
            # the driver raised them; wrapped, they map to 503 like everywhere else.
            raise OperationalError(sql, args, exc) from exc
        driver: asyncpg.Connection = pooled.driver_connection
        try:
            rows: list[Any] = await driver.fetch(sql, *args)
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
            raise _translate(self.engine, pooled, exc, sql, args) from exc
        except BaseException:
            # Cancelled mid-query: the driver may still be cancelling it server-side, so this
            # connection must not serve the next request.
            pooled.invalidate()
            raise
        finally:
            # Back to the pool; an invalidated one is reconnected on its next checkout.
            await greenlet_spawn(pooled.close)
        return rows


def _translate(
    engine: AsyncEngine,
    pooled: PoolProxiedConnection,
    exc: Exception,
    query: str,
    args: Sequence[object],
) -> DBAPIError:
    sqlstate: str = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, asyncpg.PostgresError) and not sqlstate.startswith(_FATAL_SQLSTATES):
        return DBAPIError(query, args, exc)
    # What SQLAlchemy does on a disconnect in its own execution: every connection of the pool
    # opened before now is replaced on its next checkout (a restarted database killed them all),
    # and this one is closed, never handed out again.
    engine.sync_engine.pool._invalidate(pooled, exc, _checkin=False)
    pooled.invalidate(exc)
    return OperationalError(query, args, exc, connection_invalidated=True)
