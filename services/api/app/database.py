"""The async engine, the session factory for writes, and `Reader` for pure reads: one pool.

Every database failure reaches the request as a SQLAlchemy exception, so the problem handlers map
it in one place (app.errors.database). Two public SQLAlchemy events make that true for the ways
asyncpg fails outside its own exception classes:

- `do_connect`: whatever opening a connection raises (refused, unreachable, timed out, the server
  starting up or out of connections) becomes the DBAPI's OperationalError, which SQLAlchemy
  wraps like any other. Otherwise an OSError or a raw asyncpg error escapes the pool, and the
  only way to tell it from any other OSError would be to guess.
- `handle_error`: an OSError during a statement (a reset socket, asyncpg's command_timeout)
  marks the connection as lost, so SQLAlchemy discards it instead of pooling it again.
"""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Executable, event
from sqlalchemy.engine import Dialect, ExceptionContext, RowMapping
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        settings.sqlalchemy_url.get_secret_value(),
        # Failures are mapped from exceptions, never parsed out of messages: keep the bound
        # values (an email, a token hash) out of every exception's text and so out of the logs.
        hide_parameters=True,
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
    event.listen(engine.sync_engine, "do_connect", _connect)
    event.listen(engine.sync_engine, "handle_error", _lost_connection)
    return engine


def _connect(
    dialect: Dialect, record: ConnectionPoolEntry, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    try:
        return dialect.connect(*cargs, **cparams)
    except dialect.loaded_dbapi.Error:
        raise
    except Exception as exc:
        # Everything that can fail here is the database (or the way to it) being unavailable.
        error: Exception = dialect.loaded_dbapi.OperationalError(
            f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}"
        )
        raise error from exc


def _lost_connection(context: ExceptionContext) -> BaseException | None:
    error = context.original_exception
    if not isinstance(error, OSError) or context.connection is None:
        return None
    context.is_disconnect = True
    # A timeout leaves the server up (the statement was slow): only this connection goes. A
    # reset socket usually means the server restarted: every pooled connection is gone too.
    context.invalidate_pool_on_disconnect = not isinstance(error, TimeoutError)
    return OperationalError(
        context.statement,
        context.parameters,
        error,
        hide_parameters=True,
        connection_invalidated=True,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: handlers serialise objects after commit without another SELECT.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class Reader:
    """Pure reads: one Core statement each, outside a transaction, on the engine's own pool.

    AUTOCOMMIT (SQLAlchemy's documented way to share one pool between isolation levels) drops the
    BEGIN and the ROLLBACK that SQLAlchemy would wrap around the SELECT: two round trips that a
    single statement does not need to be consistent. Writes stay on the ORM's sessions, where
    the unit of work and the transaction earn their cost.

    Never more reads at once than the pool holds connections: past its size SQLAlchemy opens
    overflow connections and closes each one as soon as it comes back, so a burst of reads (a
    replica sees 32 at once under `make bench`) opened about 25 connections a second, each with
    its TLS probe and authentication. Waiting on this semaphore costs almost nothing; overflow
    stays for the writes.
    """

    def __init__(self, engine: AsyncEngine, limit: int) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._slots = asyncio.Semaphore(limit)

    async def rows(
        self, statement: Executable, params: Mapping[str, object] | None = None
    ) -> Sequence[RowMapping]:
        """Every row of `statement`, by column name. Failures raise SQLAlchemy's exceptions."""
        async with self._slots, self.engine.connect() as connection:
            result = await connection.execute(statement, params)
            return result.mappings().all()
