"""The server's side of a run, from the API's own metrics in Prometheus (docs/CONTRACT.md).

Counters and histogram buckets are read at two instants: the window's start, which sees the last
scrape before any load (the orchestrator waits for a scrape after seeding), and just after the
first scrape of every replica that follows the stop. Their difference is exactly what the replicas
counted during the test; `increase(x[window])` would extrapolate to the window's edges and count
traffic that never happened. A counter that went down (a replica restarted) counts from zero.
Gauges (pool, memory) use `max_over_time`/`avg_over_time` over the window.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
Key = tuple[str, ...]


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
    def __init__(self, prometheus: Prometheus, edges: Edges) -> None:
        self.prometheus = prometheus
        self.edges = edges

    def deltas(self, selector: str, by: Iterable[str]) -> dict[Key, float]:
        """What each series counted between the edges, summed by the `by` labels."""
        by = tuple(by)
        start = self.edges.window.start
        before = {
            tuple(sorted(s.labels.items())): s.value for s in self.prometheus.query(selector, start)
        }
        result: dict[Key, float] = {}
        for sample in self.prometheus.query(selector, self.edges.after):
            base = before.get(tuple(sorted(sample.labels.items())), 0.0)
            counted = sample.value - base if sample.value >= base else sample.value
            key = tuple(sample.labels.get(label, "") for label in by)
            result[key] = result.get(key, 0.0) + counted
        return result

    def gauge(self, function: str, selector: str) -> dict[str, float]:
        """`function`_over_time of a gauge over the window, per instance."""
        expr = f"{function}_over_time({selector}[{self.edges.range}])"
        return {
            s.labels.get("instance", ""): s.value
            for s in self.prometheus.query(expr, self.edges.after)
        }

    def numbers(self, thresholds: Thresholds) -> SideNumbers:
        counts = self.deltas(f"http_requests_total{{{API}}}", ("method", "handler"))
        errors = self.deltas(f'http_requests_total{{{API}, status=~"5.."}}', ("method", "handler"))
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
        )

    def _cpu_cores(self) -> dict[str, float]:
        cpu = self.deltas(f"process_cpu_seconds_total{{{API}}}", ("instance",))
        stamps: dict[str, list[float]] = {}
        for at in (self.edges.window.start, self.edges.after):
            expr = f"timestamp(process_cpu_seconds_total{{{API}}})"
            for s in self.prometheus.query(expr, at):
                stamps.setdefault(s.labels.get("instance", ""), []).append(s.value)
        return {
            instance: seconds / (ts[-1] - ts[0])
            for (instance,), seconds in cpu.items()
            if len(ts := stamps.get(instance, [])) == 2 and ts[-1] > ts[0]
        }

    def extras(self) -> ServerExtras:
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
        nginx = self.deltas('nginx_http_requests_total{job="nginx"}', ())
        host = self.deltas('node_cpu_seconds_total{job="node"}', ("cpu", "mode"))
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
        )


@dataclass(frozen=True)
class ServerSeries:
    """The server's numbers over the window, one point per scrape interval, for the charts."""

    throughput: list[Series]
    latency: dict[str, list[Series]]
    errors_5xx: list[Series]
    errors_4xx: list[Series]
    replicas: list[Series]
    step: str  # each point counts one scrape interval of this length


def step_counts(
    prometheus: Prometheus, selector: str, by: Iterable[str], edges: Edges, step: float
) -> dict[Key, dict[float, float]]:
    """What the series counted per step of the window, summed by `by`: {step middle: count}.

    The totals' method, one scrape at a time: each raw sample minus the one before it (from the
    last scrape before the load, so nothing of the seeding), filed under the step its scrape fell
    in. The steps add up to the totals, and no rate() window smooths the ramp-up away.
    """
    by = tuple(by)
    start = edges.window.start
    span = math.ceil(edges.after - start + 3 * step)
    result: dict[Key, dict[float, float]] = {}
    for one in prometheus.samples(selector, span, edges.after):
        group = result.setdefault(tuple(one.labels.get(label, "") for label in by), {})
        for (_, before), (at, after) in itertools.pairwise(one.points):
            if at <= start:
                continue
            middle = start + (math.ceil((at - start) / step) - 0.5) * step
            group[middle] = group.get(middle, 0.0) + (after - before if after >= before else after)
    return result


def _per_second(counts: Mapping[float, float], step: float, labels: dict[str, str]) -> Series:
    return Series(labels, [(t, counts[t] / step) for t in sorted(counts)])


def series(prometheus: Prometheus, edges: Edges, interval: float) -> ServerSeries:
    step = max(interval, 1.0)

    requests = f"http_requests_total{{{API}}}"
    raw = step_counts(
        prometheus, f"http_request_duration_seconds_bucket{{{API}}}", ("le",), edges, step
    )
    by_time: dict[float, dict[float, float]] = {}
    for (le,), counts in raw.items():
        for at, count in counts.items():
            by_time.setdefault(at, {})[float(le)] = count
    latency = {}
    for q in PERCENTILES:
        points = [(at, bucket_quantile(buckets, q)) for at, buckets in sorted(by_time.items())]
        latency[f"p{round(q * 100)}"] = [
            Series({}, [(at, value) for at, value in points if value is not None])
        ]
    total_counts = step_counts(prometheus, requests, (), edges, step).get((), {})
    zero = dict.fromkeys(total_counts, 0.0)  # steps with no such status still draw a zero

    def status(pattern: str) -> list[Series]:
        selector = f'http_requests_total{{{API}, status=~"{pattern}"}}'
        counts = step_counts(prometheus, selector, (), edges, step).get((), {})
        return [_per_second({**zero, **counts}, step, {})]

    return ServerSeries(
        throughput=[_per_second(total_counts, step, {})],
        latency=latency,
        errors_5xx=status("5.."),
        errors_4xx=status("4.."),
        replicas=[
            _per_second(counts, step, {"instance": instance})
            for (instance,), counts in step_counts(
                prometheus, requests, ("instance",), edges, step
            ).items()
        ],
        step=f"{step:g}s",
    )
