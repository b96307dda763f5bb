"""The application factory and its lifespan: pools open before serving and close after draining."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.body_deadline import BodyDeadlineMiddleware
from app.cache import ItemCache, create_redis
from app.config import Settings, get_settings
from app.database import Reader, create_engine, create_session_factory
from app.errors import register_exception_handlers
from app.head import HeadAsGetMiddleware
from app.idempotency import clean_expired_keys
from app.observability.logging import configure_logging
from app.observability.metrics import AppMetrics
from app.observability.middleware import RequestContextMiddleware
from app.routes import routers

logger = logging.getLogger("app")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    redis = create_redis(settings)
    app.state.engine = engine
    app.state.reader = Reader(engine, limit=settings.db_pool_size)
    app.state.session_factory = create_session_factory(engine)
    app.state.cache = ItemCache(
        redis,
        app.state.metrics,
        ttl_seconds=settings.cache_ttl_seconds,
        retry_after_seconds=settings.cache_retry_after_seconds,
    )
    app.state.metrics.watch_pool(engine, settings.db_max_overflow)
    cleaner = asyncio.create_task(
        clean_expired_keys(
            app.state.session_factory,
            settings.idempotency_key_ttl_seconds,
            settings.idempotency_cleanup_interval_seconds,
        ),
        name="idempotency-key-cleanup",
    )
    # What start-up allocated (modules, routes, models) lives as long as the process: frozen out
    # of the collector's sight, every collection scans only what requests allocate. make bench
    # measured a tenth of the CPU of an uncached read going to the collector before this.
    gc.collect()
    gc.freeze()
    logger.info("started", extra={"version": __version__, "env": settings.app_env})
    try:
        yield
    finally:
        # Uvicorn runs this only after in-flight requests have finished (or the grace ran out).
        cleaner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cleaner
        await redis.aclose()
        await engine.dispose()
        logger.info("stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        # FastAPI's native OpenTelemetry stays off: this stack's telemetry is Prometheus (metrics)
        # and JSON logs, and it runs no collector. Left on, FastAPI asks the global OpenTelemetry
        # providers on every request whether one was configured: about 5% of a cached GET's CPU
        # (make bench). An OpenTelemetry deployment turns these on and configures its exporter.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="FastAPI production stack",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        # /items/1/ is a 404, not a 307 to /items/1: the API's paths have one spelling, and the
        # instrumentator (8.1.0) labels a redirected request with its raw path, one series per
        # id a client sends with a trailing slash, where a 404 is counted under handler="none".
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.metrics = AppMetrics(settings.replica_name, http_enabled=settings.metrics_enabled)
    app.state.metrics.export_capacity(settings.api_replicas)
    register_exception_handlers(app)
    for router in routers:
        app.include_router(router)
    # Innermost: routing sees a HEAD as the GET; the metrics and the access log outside it
    # record HEAD.
    app.add_middleware(HeadAsGetMiddleware)
    app.state.metrics.install(app)
    # Inside RequestContextMiddleware: a 408 for a slow body has the request id and is logged.
    app.add_middleware(BodyDeadlineMiddleware, seconds=settings.request_body_timeout_seconds)
    # Added last so it is the outermost user middleware: the request id exists for everything,
    # the instrumentator's metrics middleware included.
    app.add_middleware(RequestContextMiddleware)
    return app


def create_app_from_env() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.replica_name)
    return create_app(settings)
