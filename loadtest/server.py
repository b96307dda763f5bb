"""The server's side of a run, from the API's own metrics in Prometheus (docs/CONTRACT.md).

Counters and histogram buckets are counted from their raw samples, scrape by scrape, from the
last scrape before any load (the orchestrator waits for one after seeding) to the first scrape of
every replica that follows the stop, by the rules in counters.py: only samples of the processes
that served the window count, so numbers right after a restart are as exact as any others.
`increase(x[window])` would extrapolate to the window's edges and count traffic that never
happened. Gauges (pool, memory) use `max_over_time`/`avg_over_time` over the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from loadtest.counters import History, Key, Scrapes, scrapes_from
from loadtest.model import (
    PERCENTILES,
    Latency,
    Replica,
    RouteNumbers,
    ServerExtras,
    SideNumbers,
    Window,
)
from loadtest.prom import Prometheus, Series
from loadtest.thresholds import Thresholds

API = 'job="api"'


def bucket_quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """histogram_quantile() of Prometheus on cumulative {upper bound: count} buckets."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]) or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the largest finite bucket: its bound is all we know
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None


def _latency(buckets: Mapping[float, float]) -> Latency:
    values = [bucket_quantile(buckets, q) for q in PERCENTILES]
    p50, p95, p99 = (v * 1000 if v is not None else None for v in values)
    return Latency(p50, p95, p99)


@dataclass(frozen=True)
class Edges:
    """The two instants the counters are read at, and the window the load ran in."""

    window: Window
    after: float  # just after every replica's first scrape following the stop

    @property
    def range(self) -> str:
        return f"{math.ceil(self.after - self.window.start)}s"


class ServerReader:
    def __init__(self, prometheus: Prometheus, edges: Edges, interval: float) -> None:
        self.prometheus = prometheus
        self.edges = edges
        # From well before the last scrape preceding the window, which every series' first
        # increment is measured from, to the first scrapes after the stop.
        self.span = math.ceil(edges.after - edges.window.start + 3 * interval + 5)
        self._scrapes: dict[str, dict[str, Scrapes]] = {}
        self._histories: dict[str, History] = {}

    def scrapes(self, job: str) -> dict[str, Scrapes]:
        if job not in self._scrapes:
            at = self.edges.after
            up = self.prometheus.samples(f'up{{job="{job}"}}', self.span, at)
            # Only the API's counters belong to the process whose start time its target reports;
            # an exporter restarting says nothing about nginx's or the kernel's counters.
            starts = (
                self.prometheus.samples(f"process_start_time_seconds{{{API}}}", self.span, at)
                if job == "api"
                else []
            )
            self._scrapes[job] = scrapes_from(up, starts)
        return self._scrapes[job]

    def history(self, selector: str, job: str = "api") -> History:
        if selector not in self._histories:
            series = self.prometheus.samples(selector, self.span, self.edges.after)
            self._histories[selector] = History(series, self.scrapes(job))
        return self._histories[selector]

    def deltas(self, selector: str, by: Iterable[str], job: str = "api") -> dict[Key, float]:
        """What the series counted during the window, summed by the `by` labels."""
        return self.history(selector, job).counted(by, self.edges.window.start, self.edges.after)

    def gauge(self, function: str, selector: str) -> dict[str, float]:
        """`function`_over_time of a gauge over the window, per instance."""
        expr = f"{function}_over_time({selector}[{self.edges.range}])"
        return {
            s.labels.get("instance", ""): s.value
            for s in self.prometheus.query(expr, self.edges.after)
        }

    @property
    def requests(self) -> History:
        return self.history(f"http_requests_total{{{API}}}")

    def numbers(self, thresholds: Thresholds, steady_rps: float | None) -> SideNumbers:
        by_status = self.deltas(f"http_requests_total{{{API}}}", ("method", "handler", "status"))
        counts: dict[tuple[str, str], float] = {}
        errors: dict[tuple[str, str], float] = {}
        for (method, handler, status), count in by_status.items():
            counts[method, handler] = counts.get((method, handler), 0.0) + count
            if status.startswith("5"):
                errors[method, handler] = errors.get((method, handler), 0.0) + count
        raw = self.deltas(
            f"http_request_duration_seconds_bucket{{{API}}}", ("method", "handler", "le")
        )
        buckets: dict[str, dict[float, float]] = {}
        for (method, handler, le), count in raw.items():
            histogram = buckets.setdefault(f"{method} {handler}", {})
            histogram[float(le)] = histogram.get(float(le), 0.0) + count
        routes = {
            f"{method} {handler}": RouteNumbers(
                route=f"{method} {handler}",
                requests=round(count),
                failures=round(errors.get((method, handler), 0.0)),
                latency=_latency(buckets.get(f"{method} {handler}", {})),
            )
            for (method, handler), count in counts.items()
            if count > 0
        }
        groups = {}
        for group in thresholds.groups:
            merged: dict[float, float] = {}
            for route in group.routes:
                for bound, count in buckets.get(route, {}).items():
                    merged[bound] = merged.get(bound, 0.0) + count
            groups[group.name] = _latency(merged)
        return SideNumbers(
            side="server",
            requests=round(sum(counts.values())),
            failures=round(sum(errors.values())),
            seconds=self.edges.window.seconds,
            routes=routes,
            groups=groups,
            steady_rps=steady_rps,
        )

    def _cpu_cores(self) -> dict[str, float]:
        """CPU seconds per second of each replica, between the scrapes that bound the window."""
        cpu = self.deltas(f"process_cpu_seconds_total{{{API}}}", ("instance",))
        start, after = self.edges.window.start, self.edges.after
        cores = {}
        for (instance,), seconds in cpu.items():
            times = self.scrapes("api").get(instance, Scrapes([])).times
            before = [t for t in times if t <= start]
            inside = [t for t in times if start < t <= after]
            if before and inside:
                cores[instance] = seconds / (inside[-1] - before[-1])
        return cores

    def extras(self, sampled_requests: int | None = None) -> ServerExtras:
        per_instance = self.deltas(f"http_requests_total{{{API}}}", ("instance",))
        total = sum(per_instance.values())
        names = {
            s.labels.get("instance", ""): s.labels.get("replica_name", "")
            for s in self.prometheus.query(f"api_build_info{{{API}}}", self.edges.after)
        }
        cpu = self._cpu_cores()
        memory = self.gauge("max", f"process_resident_memory_bytes{{{API}}}")
        size = self.gauge("max", f"api_db_pool_size{{{API}}}")
        peak = self.gauge("max", f"api_db_pool_checked_out{{{API}}}")
        mean = self.gauge("avg", f"api_db_pool_checked_out{{{API}}}")
        overflow = self.gauge("max", f"api_db_pool_overflow{{{API}}}")
        instances = sorted({*names, *(key[0] for key in per_instance)})
        replicas = [
            Replica(
                instance=instance,
                name=names.get(instance) or instance,
                requests=round(per_instance.get((instance,), 0.0)),
                share=per_instance.get((instance,), 0.0) / total if total else None,
                cpu_cores=cpu.get(instance),
                memory_peak_bytes=memory.get(instance),
                pool_size=size.get(instance),
                pool_checked_out_peak=peak.get(instance),
                pool_checked_out_mean=mean.get(instance),
                pool_overflow_peak=overflow.get(instance),
            )
            for instance in instances
        ]
        lookups = self.deltas(f"api_cache_lookups_total{{{API}}}", ("result",))
        all_lookups = sum(lookups.values())
        statuses = self.deltas(f"http_requests_total{{{API}}}", ("status",))
        nginx = self.deltas('nginx_http_requests_total{job="nginx"}', (), job="nginx")
        host = self.deltas('node_cpu_seconds_total{job="node"}', ("cpu", "mode"), job="node")
        host_total = sum(host.values())
        idle = sum(v for (_, mode), v in host.items() if mode == "idle")
        return ServerExtras(
            replicas=replicas,
            cache_hit_ratio=lookups.get(("hit",), 0.0) / all_lookups if all_lookups else None,
            cache_lookups=round(all_lookups),
            statuses={status: round(v) for (status,), v in sorted(statuses.items()) if v > 0},
            nginx_requests=round(sum(nginx.values())) if nginx else None,
            host_cpu_busy=1 - idle / host_total if host_total else None,
            host_cpus=len({cpu for cpu, _ in host}) or None,
            sampled_requests=sampled_requests,
        )


def steady_rps(requests: History, window: Window) -> float | None:
    """Requests answered per second after the ramp-up, from the scrapes inside that stretch."""
    counted = requests.rate(window.spawned or window.start, window.end)
    return counted[1] if counted else None


@dataclass(frozen=True)
class ServerSeries:
    """The server's numbers over the window, one point per step, for the charts."""

    throughput: list[Series]
    latency: dict[str, list[Series]]  # over the last LATENCY_SPAN seconds at each step
    errors_5xx: list[Series]
    errors_4xx: list[Series]
    replicas: list[Series]
    step: str  # each point counts one step of this length
    source: str  # where the points come from, for the charts' legends


# Percentiles at each step cover this many seconds before it, as Locust's do, so the two sides
# draw comparable lines (one second of a few dozen requests is mostly noise at p99).
LATENCY_SPAN = 10.0


def _per_second(counts: Mapping[float, float], step: float, labels: dict[str, str]) -> Series:
    return Series(labels, [(t, counts[t] / step) for t in sorted(counts)])


def trailing(
    by_time: Mapping[float, Mapping[float, float]], span: float
) -> Iterable[tuple[float, dict[float, float]]]:
    """Each step's time with its buckets summed over the steps in (time - span, time]."""
    times = sorted(by_time)
    merged: dict[float, float] = {}
    oldest = 0
    for at in times:
        for bound, count in by_time[at].items():
            merged[bound] = merged.get(bound, 0.0) + count
        while times[oldest] <= at - span:
            for bound, count in by_time[times[oldest]].items():
                merged[bound] -= count
            oldest += 1
        yield at, dict(merged)


def series(
    requests: History, buckets: History, start: float, step: float, source: str
) -> ServerSeries:
    """Chart lines from the requests counter (labels status, instance) and the latency buckets
    (label le), each increment filed under the step its scrape fell in."""
    total = requests.steps((), start, step).get((), {})
    by_status = requests.steps(("status",), start, step)
    zero = dict.fromkeys(total, 0.0)  # steps with no such status still draw a zero

    def status(first: str) -> list[Series]:
        counts = dict(zero)
        for (code,), steps in by_status.items():
            if code.startswith(first):
                for at, count in steps.items():
                    counts[at] = counts.get(at, 0.0) + count
        return [_per_second(counts, step, {})]

    by_time: dict[float, dict[float, float]] = {}
    for (le,), counts in buckets.steps(("le",), start, step).items():
        for at, count in counts.items():
            by_time.setdefault(at, {})[float(le)] = count
    latency: dict[str, list[Series]] = {f"p{round(q * 100)}": [Series({}, [])] for q in PERCENTILES}
    for at, merged in trailing(by_time, max(LATENCY_SPAN, step)):
        if not by_time[at].get(math.inf):
            continue  # nothing answered in this step (after the stop): no point to draw
        for q in PERCENTILES:
            value = bucket_quantile(merged, q)
            if value is not None:
                latency[f"p{round(q * 100)}"][0].points.append((at, value))
    return ServerSeries(
        throughput=[_per_second(total, step, {})],
        latency=latency,
        errors_5xx=status("5"),
        errors_4xx=status("4"),
        replicas=[
            _per_second(counts, step, {"instance": instance})
            for (instance,), counts in requests.steps(("instance",), start, step).items()
        ],
        step=f"{step:g}s",
        source=source,
    )
