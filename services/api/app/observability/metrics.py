"""Prometheus metrics: per-handler HTTP RED from prometheus-fastapi-instrumentator, plus our own.

Each replica runs one Uvicorn worker process (app.config refuses WEB_CONCURRENCY > 1 and
PROMETHEUS_MULTIPROC_DIR), so one in-process registry is the truth for that replica and no
multiprocess mode is needed: the stack scales by replicas, each its own scrape target. Every app
gets its own registry, so tests can build several apps in one process.

The instrumentator is configured lean, for exactly the series the dashboards, recording rules
and alerts use: `http_requests_total{handler,method,status}` (exact status codes) and
`http_request_duration_seconds{handler,method}` (our fine buckets); no size metrics, no
in-progress gauge, no `_created` samples. Scrapes and probes are not counted, and requests that
match no route share `handler="none"`, so a scanner cannot create a series per path it tries.
`/metrics` is our own route, not `Instrumentator.expose()`, whose endpoint is a plain `def` that
FastAPI runs in its thread pool (see `AppMetrics.expose`).
"""

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from prometheus_fastapi_instrumentator.metrics import Info
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.responses import Response

from app import __version__
from app.openapi_operations import operations

# Fine around the API's normal 1-50 ms and still resolving p99 up to 5 s.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0,
)  # fmt: skip

# `*_created` samples double the scrape size and no query here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Probes and scrapes would drown the traffic that matters, and alerts would count them.
EXCLUDED_HANDLERS = [r"^/metrics$", r"^/health/"]


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


# The 5xx statuses the API itself answers (500 unexpected, 503 database unavailable): their series
# exist from start-up, at 0, for every route and method.
PRECREATED_STATUSES = ("500", "503")


def _requests_counter(app: FastAPI, registry: CollectorRegistry) -> Callable[[Info], None]:
    """http_requests_total{handler,method,status}, as the instrumentator's own `requests()` makes
    it, with the 5xx series that alerts depend on created at 0 before the first request.

    A series born at its first 503 starts at 1, and rate() sees no increase in it: three 503s
    left the 5m SLI at 1 (issue 16 #3). Created here, the first error is an increase.
    """
    counter = Counter(
        "http_requests_total",
        "Total number of requests by method, status and handler.",
        ["handler", "method", "status"],
        registry=registry,
    )
    # What the document leaves out (/metrics, /docs) is not alerted on.
    for path, methods in operations(app):
        if any(re.match(pattern, path) for pattern in EXCLUDED_HANDLERS):
            continue
        for method in methods:
            for status in PRECREATED_STATUSES:
                counter.labels(path, method, status)

    def count(info: Info) -> None:
        counter.labels(info.modified_handler, info.method, info.modified_status).inc()

    return count


def instrument(app: FastAPI, registry: CollectorRegistry) -> None:
    """Record the HTTP series for every request `app` serves, into `registry`."""
    Instrumentator(
        should_group_status_codes=False,
        should_ignore_untemplated=False,
        should_group_untemplated=True,
        excluded_handlers=EXCLUDED_HANDLERS,
        registry=registry,
    ).add(
        _requests_counter(app, registry),
        http_metrics.latency(
            buckets=LATENCY_BUCKETS, should_include_status=False, registry=registry
        ),
    ).instrument(app)


def memory_limit_bytes(path: Path = Path("/sys/fs/cgroup/memory.max")) -> int | None:
    """The cgroup v2 memory limit, None when there is none ("max") or no cgroup v2 to read
    (native runs on a host without a per-replica cgroup): then the series is absent, and the
    memory alert has nothing to compare against, rather than comparing against 0."""
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return int(value) if value.isdigit() else None


class AppMetrics:
    def __init__(self, replica: str, *, http_enabled: bool = True) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        # False when METRICS_ENABLED=false: no per-request series at all, while /metrics keeps
        # the process, pool, cache and build series (the replica stays a healthy scrape target).
        self.http_enabled = http_enabled
        self.cache_lookups = Counter(
            "api_cache_lookups",
            "Item cache lookups by result (hit, miss, error).",
            ["result"],
            registry=self.registry,
        )
        # Children looked up once: labels() validates and locks, and lookups are per request.
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

    def watch_pool(self, engine: AsyncEngine, max_overflow: int) -> None:
        self.registry.register(PoolCollector(engine))
        # The pool's ceiling is size + max_overflow: saturation is drawn against it.
        Gauge(
            "api_db_pool_max_overflow", "Connections the pool may open beyond its size.",
            registry=self.registry,
        ).set(max_overflow)  # fmt: skip

    def export_capacity(self, replicas_expected: int) -> None:
        """What capacity alerts compare against: the replicas there should be (API_REPLICAS;
        with DNS discovery a crashed replica leaves no `up` series to go to 0) and this
        process's memory limit."""
        Gauge(
            "api_replicas_expected", "Replicas configured (API_REPLICAS).", registry=self.registry
        ).set(replicas_expected)
        limit = memory_limit_bytes()
        if limit is not None:
            Gauge(
                "api_memory_limit_bytes", "The cgroup v2 memory limit of this replica.",
                registry=self.registry,
            ).set(limit)  # fmt: skip

    def install(self, app: FastAPI) -> None:
        """Serve /metrics, and record the HTTP series unless they are turned off."""
        registry = self.registry
        if self.http_enabled:
            instrument(app, registry)

        # On the event loop, not in FastAPI's thread pool: generating reads memory and procfs
        # (kernel memory, never the disk) and takes about a millisecond per scrape, while a pool
        # thread would cost every replica a thread and its malloc arena, 2 MB of RSS (make bench).
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
