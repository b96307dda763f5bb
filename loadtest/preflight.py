"""What must hold before any load is sent: the stack answers, and nginx's limiter will not be
what the test measures.

nginx allows RATE requests per second per client address (plus a burst of 100, nginx.conf), and
answers 429 beyond it. How many addresses the load comes from decides whether that matters:
natively each simulated user gets its own 127.x.y.z (sources.py), so each address carries one
user's rate; without that (Compose, or a remote host) every worker process is one address
carrying users/workers users. The planned rate per address is checked against the configured
limit up front, and any 429 that happens anyway is an unexpected answer, so a failure.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest.httpjson import HttpError, call
from loadtest.prom import Prometheus, PrometheusError
from loadtest.settings import Settings

# Headroom under the limit: arrivals are random, and the burst only absorbs short excursions.
RATE_HEADROOM = 0.8


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


def check(settings: Settings, prometheus: Prometheus) -> list[str]:
    """Raise PreflightError on what would make the run meaningless; return notes to print."""
    try:
        live = call("GET", f"{settings.host}/health/live", timeout=5).status
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
    plan = rate_plan(settings)
    notes.append(plan.describe())
    if not plan.ok:
        raise PreflightError(
            f"{plan.describe()}: above {RATE_HEADROOM:.0%} of the limit, so nginx would answer "
            "429 and the test would measure the limiter. Spread the load over more addresses "
            "(more WORKERS under Compose), lower USERS or LOADTEST_USER_RPS, or raise the rate "
            "(NGINX_RATE_LIMIT in .env natively, services/nginx/compose/http.conf under Compose)."
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
    return notes
