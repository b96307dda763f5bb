"""The numbers a run produces, from either side, in one shape the gate and the report share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Window:
    """When the load ran, in Unix seconds: from the first user starting to the stop, and when
    the last user started (the end of the ramp-up; None if no user did)."""

    start: float
    end: float
    spawned: float | None = None

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1e-9)

    def steady_seconds(self) -> range:
        """The whole wall-clock seconds after the ramp-up and before the stop: the stretch the
        throughput is judged over (Locust and the offered tally count per such second)."""
        return range(math.ceil(self.spawned or self.start), math.floor(self.end))


@dataclass(frozen=True)
class Latency:
    """p50, p95 and p99 in milliseconds; None where there was nothing to measure."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    def get(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value


@dataclass(frozen=True)
class RouteNumbers:
    route: str  # "GET /items/{item_id}"
    requests: int
    failures: int
    latency: Latency


@dataclass
class SideNumbers:
    """One side's view of the window: the client's (Locust) or the server's (Prometheus).

    `failures` is what that side can call a failure: for the client every unexpected answer, for
    the server a 5xx.
    """

    side: str
    requests: int
    failures: int
    seconds: float
    routes: dict[str, RouteNumbers] = field(default_factory=dict)
    groups: dict[str, Latency] = field(default_factory=dict)
    # Requests answered per second after the ramp-up (Window.steady_seconds), what the gate
    # compares with the offered rate; None when that stretch held no measurement.
    steady_rps: float | None = None

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_ratio(self) -> float | None:
        return self.failures / self.requests if self.requests else None


@dataclass(frozen=True)
class Offered:
    """What the users offered (schedule.py): the plan, and the arrivals their schedules drew."""

    planned_rps: float  # users x requests/s per user, once every user has started
    steady_rps: float | None  # arrivals per second after the ramp-up
    steady_seconds: int
    requests: int  # arrivals over the whole run, ramp-up included

    def describe(self) -> str:
        drawn = "n/a" if self.steady_rps is None else f"{self.steady_rps:,.1f} req/s"
        return (
            f"{drawn} after ramp-up ({self.steady_seconds} s), as the users' Poisson schedules "
            f"drew it; planned {self.planned_rps:,.1f} req/s; {self.requests:,} arrivals in all"
        )

    @classmethod
    def count(cls, per_second: Mapping[int, int], window: Window, planned_rps: float) -> Offered:
        seconds = window.steady_seconds()
        steady = sum(per_second.get(s, 0) for s in seconds)
        return cls(
            planned_rps=planned_rps,
            steady_rps=steady / len(seconds) if seconds and per_second else None,
            steady_seconds=len(seconds),
            requests=sum(n for s, n in per_second.items() if s < window.end),
        )


@dataclass
class Replica:
    instance: str
    name: str
    requests: int = 0
    share: float | None = None
    cpu_cores: float | None = None
    memory_peak_bytes: float | None = None
    pool_size: float | None = None
    pool_checked_out_peak: float | None = None
    pool_checked_out_mean: float | None = None
    pool_overflow_peak: float | None = None


@dataclass
class ServerExtras:
    """What only the server can tell: replicas, cache, pool, resources, status codes."""

    replicas: list[Replica] = field(default_factory=list)
    cache_hit_ratio: float | None = None
    cache_lookups: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    nginx_requests: int | None = None
    host_cpu_busy: float | None = None
    host_cpus: int | None = None
    # The window's requests as the load test's own 1-s reads of the replicas counted them
    # (sampler.py); None when it could not read them. Equal to the server's requests.
    sampled_requests: int | None = None


def route_key(method: str, name: str) -> str:
    """Locust's request name minus any "(…)" note, with its method: "GET /items/{item_id}"."""
    return f"{method} {name.split(' (', 1)[0]}"


def percentile(histogram: Mapping[float, int], fraction: float) -> float | None:
    """The nearest-rank percentile of a {value: count} histogram, Locust's own way."""
    total = sum(histogram.values())
    if total == 0:
        return None
    allowed_above = int(total * fraction)
    seen = 0
    for value in sorted(histogram, reverse=True):
        seen += histogram[value]
        if total - seen <= allowed_above:
            return float(value)
    return float(min(histogram))


def latency_from_histogram(histogram: Mapping[float, int]) -> Latency:
    p50, p95, p99 = (percentile(histogram, q) for q in PERCENTILES)
    return Latency(p50, p95, p99)


def merge(histograms: Iterable[Mapping[float, int]]) -> dict[float, int]:
    merged: dict[float, int] = {}
    for histogram in histograms:
        for value, count in histogram.items():
            merged[value] = merged.get(value, 0) + count
    return merged


def side_from_json(data: Mapping[str, Any]) -> SideNumbers:
    """A SideNumbers saved in results.json, back as objects (for `loadtest check`)."""
    return SideNumbers(
        side=data["side"],
        requests=data["requests"],
        failures=data["failures"],
        seconds=data["seconds"],
        routes={
            key: RouteNumbers(
                route=value["route"],
                requests=value["requests"],
                failures=value["failures"],
                latency=Latency(**value["latency"]),
            )
            for key, value in data["routes"].items()
        },
        groups={key: Latency(**value) for key, value in data["groups"].items()},
        steady_rps=data.get("steady_rps"),
    )
