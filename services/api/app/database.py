"""The async engine and session factory; connections come from one pool per replica."""

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings


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
