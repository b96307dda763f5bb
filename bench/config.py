"""What one `make bench` run is: its rows and their labels, its options and its time budget."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from stack.paths import REPO_ROOT

BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
# Rows of the stack's paths, in table order; `hello` is the unit of the CPU ratios.
CEILINGS = ("nginx", "bare", "hello")
# The libraries alone under a cached read (bench/apps/floor.py): what no configuration of the
# stack's own can go below.
FLOORS = ("floor", "floor_metrics", "floor_uncached")
# Each floor row's app in bench/apps/floor.py and the path wrk requests (the uncached one walks
# fresh ids with a script instead).
FLOOR_APPS = {
    "floor": ("app", "/items/1"),
    "floor_metrics": ("instrumented", "/items/1"),
    "floor_uncached": ("uncached", "/items/1"),
}
STACK_PATHS = ("cached", "uncached", "page", "create")
METRICS_PAIR = ("metrics_off", "metrics_on")
# The cached GET over plain HTTP and HTTPS side by side (bench/tls_rows.py).
TLS = "tls"
# Rows with a CPU-ratio target get RATIO_PAIRS (hello, path) pairs of runs; the median counts.
RATIO_TARGETS = ("cached", "uncached")
RATIO_PAIRS = 3
# Rows whose fixed-rate latency is also measured against the capacity Locust leaves the stack.
SHARED_PATHS = ("cached", "uncached")
LABELS = {
    "nginx": "nginx `return 200` (1 worker)",
    "bare": "bare ASGI app (1 Uvicorn)",
    "hello": "FastAPI hello (1 Uvicorn)",
    "floor": "FastAPI + redis-py MGET, nothing else (1 Uvicorn)",
    "floor_metrics": "the same + the instrumentator as configured",
    "floor_uncached": "FastAPI + redis-py + SQLAlchemy miss and fill, nothing else",
    "cached": "GET /items/{id}, cached",
    "uncached": "GET /items/{id}, uncached",
    "page": "GET /items (page of 20)",
    "create": "POST /items",
    "metrics_off": "GET /items/{id}, cached, METRICS_ENABLED=false",
    "metrics_on": "GET /items/{id}, cached, METRICS_ENABLED=true",
    "tls": "GET /items/{id}, cached, plain HTTP beside HTTPS",
}


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    connections: int
    fixed_seconds: int
    fixed_fraction: float
    replicas: int
    items: int
    budget: int
    profile: bool
    only: frozenset[str]

    def wants(self, name: str) -> bool:
        return not self.only or name in self.only


@dataclass
class Deadline:
    seconds: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def check(self, need: float, what: str) -> None:
        if self.left() < need:
            raise BenchError(
                f"time budget ({self.seconds:.0f} s) spent before {what}; see --budget"
            )
