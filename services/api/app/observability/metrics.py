"""Prometheus metrics: per-handler HTTP RED, plus our own.

Each replica runs one Uvicorn worker process, so one in-process registry is the truth for that
replica and no multiprocess mode is needed: the stack scales by replicas, each its own target.
Every app gets its own registry, so tests can build several apps in one process.

The HTTP series keep the names and labels prometheus-fastapi-instrumentator gave them (the
dashboards, recording rules and alerts are written against them), but are recorded by
`HttpMetrics.observe`, called from the one request middleware. The instrumentator's own
middleware matched every request against the whole route table a second time, and built a
Request, a Response and a headers object per request only to read three values: together about
as much CPU as FastAPI's own routing, for series FastAPI already knows how to label
(`make bench` measures the difference, README "Performance").
"""

import re
from collections.abc import Iterable

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.responses import Response

from app import __version__

# Fine around the API's normal 1-50 ms and still resolving p99 up to 5 s.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0,
)  # fmt: skip

# `*_created` samples double the scrape size and no query here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Probes and scrapes would drown the traffic that matters, and alerts would count them.
EXCLUDED_HANDLERS = re.compile(r"^/metrics$|^/health/")
# Requests no route matched (404s of random paths) share one label value, so a scanner cannot
# create a series per path it tries.
UNMATCHED_HANDLER = "none"


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


class HttpMetrics:
    """`http_requests_total{handler,method,status}` and
    `http_request_duration_seconds{handler,method}`, as the instrumentator defined them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests",
            "Total number of requests by method, status and handler.",
            ["handler", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests in seconds",
            ["handler", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Label lookups validate and lock on every call; a handful of (handler, method, status)
        # combinations exist, so their children are looked up once and kept.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}
        self._excluded: dict[str, bool] = {}

    def observe(self, handler: str | None, method: str, status: int, seconds: float) -> None:
        """Record one finished request; handler is the route template, None when none matched."""
        handler = handler or UNMATCHED_HANDLER
        excluded = self._excluded.get(handler)
        if excluded is None:
            excluded = self._excluded[handler] = bool(EXCLUDED_HANDLERS.match(handler))
        if excluded:
            return
        counter = self._counters.get((handler, method, status))
        if counter is None:
            counter = self._counters[handler, method, status] = self.requests.labels(
                handler, method, str(status)
            )
        counter.inc()
        histogram = self._histograms.get((handler, method))
        if histogram is None:
            histogram = self._histograms[handler, method] = self.latency.labels(handler, method)
        histogram.observe(seconds)


class AppMetrics:
    def __init__(self, replica: str, *, http_enabled: bool = True) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        # None when METRICS_ENABLED=false: the middleware then records nothing per request,
        # while /metrics keeps the process, pool, cache and build series (the replica stays a
        # healthy scrape target).
        self.http = HttpMetrics(self.registry) if http_enabled else None
        self.cache_lookups = Counter(
            "api_cache_lookups",
            "Item cache lookups by result (hit, miss, error).",
            ["result"],
            registry=self.registry,
        )
        # Children kept for the same reason as HttpMetrics': cache lookups are per request.
        self.cache_hit, self.cache_miss, self.cache_error = (
            self.cache_lookups.labels(result) for result in ("hit", "miss", "error")
        )
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

    def expose(self, app: FastAPI) -> None:
        registry = self.registry

        # On the event loop, not in FastAPI's thread pool: generating reads memory and procfs
        # (kernel memory, never the disk) and takes about a millisecond per scrape, while a pool
        # thread would cost every replica a thread and its malloc arena, 2 MB of RSS (make bench).
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
