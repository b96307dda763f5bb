"""The application factory and its lifespan: pools open before serving and close after draining."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from app import __version__
from app.cache import ItemCache
from app.config import Settings, get_settings
from app.database import create_engine, create_session_factory
from app.errors import register_exception_handlers
from app.observability.logging import configure_logging
from app.observability.metrics import AppMetrics
from app.observability.middleware import RequestContextMiddleware
from app.routes import api_router

logger = logging.getLogger("app")


def create_redis(settings: Settings) -> Redis:
    return Redis.from_url(
        settings.redis_dsn,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        # No retries: a retry doubles the time a dead Redis holds a request; we fail open instead.
        retry=None,
        health_check_interval=0,
        max_connections=64,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    redis = create_redis(settings)
    app.state.engine = engine
    app.state.session_factory = create_session_factory(engine)
    app.state.cache = ItemCache(
        redis,
        app.state.metrics,
        ttl_seconds=settings.cache_ttl_seconds,
        retry_after_seconds=settings.cache_retry_after_seconds,
    )
    app.state.metrics.watch_pool(engine)
    logger.info("started", extra={"version": __version__, "env": settings.app_env})
    try:
        yield
    finally:
        # Uvicorn runs this only after in-flight requests have finished (or the grace ran out).
        await redis.aclose()
        await engine.dispose()
        logger.info("stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="FastAPI production stack",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    app.state.metrics = AppMetrics(settings.replica_name)
    register_exception_handlers(app)
    app.include_router(api_router)
    app.state.metrics.instrument(app)
    # Added last so it is the outermost user middleware: the request id exists for everything.
    app.add_middleware(RequestContextMiddleware)
    return app


def create_app_from_env() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.replica_name)
    return create_app(settings)
