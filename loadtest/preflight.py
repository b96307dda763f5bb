"""What must hold before any load is sent: the stack answers, HOST is the stack Prometheus
watches, the load planned is one this machine can drive, and nginx's limiter will not be what
the test measures. Each refusal names the knob to turn.

What one Locust process can send is finite: a worker is one gevent loop, so one core at most,
and this scenario (JSON bodies, checks on every answer, one connection and address per user,
Poisson timers) cost a worker 1.4-1.9 ms of CPU per request on the 2-core reference machine (CPU
time of both workers over the window: 22.9 s for a default run's 16,774 requests, 3.9 s for a
20-user run's 2,008, with other work sharing the machine). A plan beyond PROCESS_RPS per process
(and natively one process per core) would measure Locust, not the stack, so it is refused. The
throughput is judged once every user has started (thresholds.py), so the ramp-up (USERS /
SPAWN_RATE) must leave enough of DURATION for that.

nginx allows RATE requests per second per client address (plus a burst of 100, nginx.conf), and
answers 429 beyond it. How many addresses the load comes from decides whether that matters:
natively each simulated user gets its own 127.x.y.z (sources.py), so each address carries one
user's rate; without that (Compose, or a remote host) every worker process is one address
carrying users/workers users. The planned rate per address is checked against the configured
limit up front, and any 429 that happens anyway is an unexpected answer, so a failure.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest.httpjson import HttpError, call
from loadtest.prom import Prometheus, PrometheusError
from loadtest.sampler import REQUESTS, reduce
from loadtest.settings import Settings

# Headroom under the limit: arrivals are random, and the burst only absorbs short excursions.
RATE_HEADROOM = 0.8
PROCESS_CPU_MS = 2.0
# Half a core's worth: the process must keep up with Poisson bursts and its own reporting.
PROCESS_RPS = 0.5 * 1000 / PROCESS_CPU_MS
MIN_STEADY_SECONDS = 5.0
PROBES = 5  # requests sent through HOST to see the replicas count them


class PreflightError(RuntimeError):
    pass


@dataclass(frozen=True)
class RatePlan:
    limit_rps: float | None  # None: unknown (not our stack, or no config to read)
    addresses: int
    per_address_rps: float
    source: str

    @property
    def ok(self) -> bool:
        return self.limit_rps is None or self.per_address_rps <= self.limit_rps * RATE_HEADROOM

    def describe(self) -> str:
        plan = f"{self.per_address_rps:g} req/s from each of {self.addresses} client address(es)"
        if self.limit_rps is None:
            return f"nginx rate limit: unknown ({self.source}); this run: {plan}"
        return f"nginx rate limit: {self.limit_rps:g} req/s per address ({self.source}); {plan}"


def nginx_rate(conf: Path | None) -> tuple[float | None, str]:
    """The limit_req_zone rate in requests/s from the include nginx loads, if readable."""
    if conf is None or not conf.is_file():
        return None, "no nginx config to read"
    match = re.search(r"limit_req_zone\s+\S+\s+zone=\S+\s+rate=(\d+)r/([sm])", conf.read_text())
    if match is None:
        return None, f"no limit_req_zone in {conf}"
    per_unit = float(match[1])
    return (per_unit if match[2] == "s" else per_unit / 60), str(conf)


def rate_plan(settings: Settings) -> RatePlan:
    limit, source = nginx_rate(settings.nginx_http_conf)
    if settings.spread_sources:
        addresses = settings.users
    else:
        addresses = max(settings.workers, 1) if settings.external_workers else 1
    per_address = math.ceil(settings.users / addresses) * settings.user_rps
    return RatePlan(limit, addresses, round(per_address, 2), source)


@dataclass(frozen=True)
class LoadPlan:
    """The load a run plans, against what its Locust processes can send and its duration."""

    users: int
    user_rps: float
    processes: int
    ramp_seconds: float
    duration_seconds: float
    min_steady_seconds: float
    cores: int | None = None  # this machine's, when the workers run on it

    @property
    def planned_rps(self) -> float:
        return self.users * self.user_rps

    @property
    def sending(self) -> int:
        """Processes that can send at once: one gevent loop each, at most one per core."""
        return min(self.processes, self.cores) if self.cores else self.processes

    @property
    def steady_seconds(self) -> float:
        return self.duration_seconds - self.ramp_seconds

    def describe(self) -> str:
        return (
            f"planned {self.planned_rps:,.6g} req/s ({self.users} users x {self.user_rps:g}/s) "
            f"from {self.processes} Locust process(es); ramp-up {self.ramp_seconds:.3g} s, then "
            f"{self.steady_seconds:.3g} s at the full rate"
        )

    def refusals(self) -> list[str]:
        found = []
        if self.planned_rps > self.sending * PROCESS_RPS:
            cores = f" on {self.cores} cores" if self.cores else ""
            found.append(
                f"USERS x LOADTEST_USER_RPS = {self.planned_rps:,.6g} req/s is more than "
                f"{self.processes} Locust process(es){cores} can send (about "
                f"{PROCESS_RPS:,.0f} req/s each with this scenario, one process per core): the "
                "run would measure Locust, not the stack. Lower USERS or LOADTEST_USER_RPS, or "
                "raise WORKERS up to one per core."
            )
        if self.steady_seconds < self.min_steady_seconds:
            found.append(
                f"USERS / SPAWN_RATE = {self.ramp_seconds:.3g} s of ramp-up leaves "
                f"{max(self.steady_seconds, 0):.3g} s of DURATION at the full rate; throughput is "
                f"judged after the ramp-up, over at least {self.min_steady_seconds:.3g} s. Raise "
                "SPAWN_RATE or DURATION."
            )
        return found


def load_plan(settings: Settings, min_steady_seconds: float) -> LoadPlan:
    return LoadPlan(
        users=settings.users,
        user_rps=settings.user_rps,
        processes=max(settings.workers, 1),
        ramp_seconds=settings.users / settings.spawn_rate,
        duration_seconds=settings.duration_s,
        min_steady_seconds=min_steady_seconds,
        cores=None if settings.external_workers else os.cpu_count(),
    )


def metrics_urls(prometheus: Prometheus) -> dict[str, str]:
    """Each API replica's /metrics, as Prometheus scrapes it: {instance: URL}."""
    return {str(t["labels"]["instance"]): str(t["scrapeUrl"]) for t in prometheus.targets("api")}


def counted_requests(urls: dict[str, str]) -> float | None:
    """All requests the replicas have counted, read from their /metrics directly; None when
    one of them cannot be read from here (a remote stack, another network)."""
    total = 0.0
    for url in urls.values():
        try:
            answer = call("GET", url, timeout=5)
        except HttpError:
            return None
        if answer.status != 200:
            return None
        sums, _ = reduce(answer.body.decode())
        total += sum(v for (metric, _), v in sums.items() if metric == REQUESTS)
    return total


def probe(host: str, urls: dict[str, str], ca: Path | None = None) -> bool:
    """Whether requests sent to `host` are counted by the replicas Prometheus scrapes."""
    before = counted_requests(urls)
    for _ in range(PROBES):
        with contextlib.suppress(HttpError):
            call("GET", f"{host}/items?limit=1", timeout=5, ca=ca)
    after = counted_requests(urls)
    return before is not None and after is not None and after - before >= PROBES


def _replicas_up(prometheus: Prometheus, timeout: float = 60) -> list[dict[str, object]]:
    """The api targets, once Prometheus has found and scraped them all (just after `make up` it
    has not yet): without them there is no server side to judge."""
    deadline = time.monotonic() + timeout
    down: list[str] = []
    while True:
        try:
            replicas = prometheus.targets("api")
        except PrometheusError as exc:
            raise PreflightError(str(exc)) from exc
        down = [str(t["scrapeUrl"]) for t in replicas if t.get("health") != "up"]
        if replicas and not down:
            return replicas
        if time.monotonic() > deadline:
            raise PreflightError(f"API replicas not up in Prometheus: {down or 'none configured'}")
        time.sleep(1)


def server_metrics(prometheus: Prometheus) -> None:
    """After seeding the replicas must have counted its requests, or there is no server side."""
    if not prometheus.query('count(http_requests_total{job="api"})', time.time()):
        raise PreflightError(
            "the replicas report no http_requests_total (METRICS_ENABLED=false?): "
            "the server's side of the run could not be judged"
        )


@dataclass(frozen=True)
class Ready:
    """What the checks found: notes to print, and the replicas' /metrics if readable here."""

    notes: list[str]
    metrics_urls: dict[str, str] | None


def check(settings: Settings, prometheus: Prometheus) -> Ready:
    """Raise PreflightError on what would make the run meaningless."""
    try:
        live = call("GET", f"{settings.host}/health/live", timeout=5, ca=settings.ca).status
    except HttpError as exc:
        raise PreflightError(
            f"nothing answers at {settings.host} ({exc}): is the stack up? (make up)"
        ) from exc
    if live != 200:
        raise PreflightError(f"{settings.host}/health/live answered {live}, not 200")
    if not prometheus.ready():
        raise PreflightError(f"Prometheus at {prometheus.url} is not ready: no server-side numbers")
    replicas = _replicas_up(prometheus)
    notes = [f"target {settings.host}; Prometheus {prometheus.url}; {len(replicas)} API replicas"]
    urls: dict[str, str] | None = metrics_urls(prometheus)
    min_steady = MIN_STEADY_SECONDS
    if counted_requests(urls or {}) is None:
        urls = None
        interval = prometheus.scrape_interval()
        min_steady = max(MIN_STEADY_SECONDS, 3 * interval)
        notes.append(
            "the replicas' /metrics cannot be read from here: the server's per-second numbers "
            f"come from Prometheus's {interval:g} s scrapes"
        )
    plan = rate_plan(settings)
    notes.append(plan.describe())
    if not plan.ok:
        raise PreflightError(
            f"{plan.describe()}: above {RATE_HEADROOM:.0%} of the limit, so nginx would answer "
            "429 and the test would measure the limiter. Spread the load over more addresses "
            "(more WORKERS under Compose), lower USERS or LOADTEST_USER_RPS, or raise the rate "
            "(NGINX_RATE_LIMIT in .env natively, services/nginx/compose/http.conf under Compose)."
        )
    load = load_plan(settings, min_steady)
    notes.append(load.describe())
    if load.refusals():
        raise PreflightError(" ".join(load.refusals()))
    if urls is not None and not probe(settings.host, urls, settings.ca):
        raise PreflightError(
            f"the API replicas that Prometheus at {prometheus.url} scrapes did not count "
            f"{PROBES} requests sent to {settings.host}: HOST is not the stack this Prometheus "
            "watches, so the server's side would judge other traffic. Point HOST and "
            "LOADTEST_PROMETHEUS_URL at the same stack."
        )
    if settings.pushgateway_url:
        try:
            auth = settings.monitoring_auth.header if settings.monitoring_auth else None
            url = f"{settings.pushgateway_url}/-/ready"
            ready = call("GET", url, headers=auth, timeout=5).status == 200
        except HttpError:
            ready = False
        if not ready:
            notes.append(f"Pushgateway {settings.pushgateway_url} not ready: no live numbers")
    cores = os.cpu_count() or 1
    if not settings.external_workers and settings.workers > cores:
        notes.append(f"{settings.workers} workers on {cores} cores: Locust may be the bottleneck")
    return Ready(notes, urls)
