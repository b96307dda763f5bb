"""Prometheus metrics: HTTP RED from prometheus-fastapi-instrumentator, plus our own.

Each replica runs one Uvicorn worker process, so one in-process registry is the truth for that
replica and no multiprocess mode is needed: the stack scales by replicas, each its own target.
Every app gets its own registry, so tests can build several apps in one process.
"""

from collections.abc import Iterable

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app import __version__

# Fine around the API's normal 1-50 ms and still resolving p99 up to 5 s.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0,
)  # fmt: skip

# `*_created` samples double the scrape size and no query here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

EXCLUDED_HANDLERS = ["^/metrics$", "^/health/.*"]


class PoolCollector(Collector):
    """Reads the SQLAlchemy pool at scrape time, so nothing is paid per request."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterable[Metric]:
        pool = self.engine.sync_engine.pool
        size = checked_out = overflow = 0
        if isinstance(pool, QueuePool):
            size, checked_out, overflow = pool.size(), pool.checkedout(), max(pool.overflow(), 0)
        yield GaugeMetricFamily("api_db_pool_size", "Connections the pool keeps open.", size)
        yield GaugeMetricFamily(
            "api_db_pool_checked_out", "Connections in use by requests.", checked_out
        )
        yield GaugeMetricFamily(
            "api_db_pool_overflow", "Connections opened beyond the pool size.", overflow
        )


class AppMetrics:
    def __init__(self, replica: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.cache_lookups = Counter(
            "api_cache_lookups",
            "Item cache lookups by result (hit, miss, error).",
            ["result"],
            registry=self.registry,
        )
        for result in ("hit", "miss", "error"):
            self.cache_lookups.labels(result)  # export zeros so ratios exist from the start
        self.cache_invalidation_errors = Counter(
            "api_cache_invalidation_errors",
            "Cache invalidations that failed after a committed write (entry expires by TTL).",
            registry=self.registry,
        )
        build_info = Gauge(
            # Not `replica`: Prometheus sets that target label itself, and a clash would rename
            # ours to exported_replica.
            "api_build_info", "Version and replica of this process.", ["version", "replica_name"],
            registry=self.registry,
        )  # fmt: skip
        build_info.labels(__version__, replica).set(1)

    def watch_pool(self, engine: AsyncEngine) -> None:
        self.registry.register(PoolCollector(engine))

    def instrument(self, app: FastAPI) -> None:
        instrumentator = Instrumentator(
            should_group_status_codes=False,
            should_ignore_untemplated=False,
            should_group_untemplated=True,
            excluded_handlers=EXCLUDED_HANDLERS,
            registry=self.registry,
        )
        instrumentator.add(metrics.requests(registry=self.registry))
        instrumentator.add(
            metrics.latency(
                buckets=LATENCY_BUCKETS, should_include_status=False, registry=self.registry
            )
        )
        instrumentator.instrument(app).expose(app, include_in_schema=False)
