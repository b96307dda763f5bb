"""Locust's live numbers, pushed to the Pushgateway for Prometheus and the "Load test" dashboard.

The master (or the only process) pushes every couple of seconds under job="locust" and the run's
id; the Pushgateway is an always-up scrape target, so no target appears and vanishes with a run.
Metric names are listed in docs/CONTRACT.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust.env import Environment
from locust.runners import MasterRunner
from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.registry import Collector

from loadtest.model import PERCENTILES
from stack.monitoring_auth import BasicAuth

logger = logging.getLogger("loadtest.export")
JOB = "locust"


class LocustCollector(Collector):
    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def collect(self) -> Iterator[Metric]:
        runner = self.environment.runner
        if runner is None:
            return
        yield GaugeMetricFamily("locust_users", "Simulated users running.", value=runner.user_count)
        if isinstance(runner, MasterRunner):
            workers = len(runner.clients.ready + runner.clients.spawning + runner.clients.running)
            yield GaugeMetricFamily("locust_workers", "Workers connected.", value=workers)
        labels = ["method", "name"]
        requests = CounterMetricFamily("locust_requests", "Requests sent, by name.", labels=labels)
        failures = CounterMetricFamily(
            "locust_failures", "Requests with an unexpected answer, by name.", labels=labels
        )
        latency = GaugeMetricFamily(
            "locust_response_time_seconds",
            "Response time percentiles over the last 10 seconds, as Locust's UI shows them.",
            labels=[*labels, "quantile"],
        )
        stats = runner.stats
        for entry in [*stats.entries.values(), stats.total]:
            key = [entry.method or "", entry.name]
            if entry is not stats.total:
                requests.add_metric(key, entry.num_requests)
                failures.add_metric(key, entry.num_failures)
            for q in PERCENTILES:
                value = entry.get_current_response_time_percentile(q)
                if value is not None and entry.use_response_times_cache:
                    latency.add_metric([*key, str(q)], value / 1000)
        yield from (requests, failures, latency)


class Pusher:
    def __init__(
        self,
        environment: Environment,
        url: str,
        run_id: str,
        interval: float,
        auth: BasicAuth | None,
    ) -> None:
        self.url, self.run_id, self.interval = url, run_id, interval
        self.registry = CollectorRegistry()
        self.registry.register(LocustCollector(environment))
        # The Pushgateway takes pushes only with the monitoring credential.
        self._handler: Callable[..., Any] = (
            partial(basic_auth_handler, username=auth.user, password=auth.password)
            if auth
            else default_handler
        )
        self._failing = False
        self._greenlet: Any = None

    def push(self) -> None:
        try:
            push_to_gateway(
                self.url,
                job=JOB,
                grouping_key={"run": self.run_id},
                registry=self.registry,
                handler=self._handler,
            )
        except OSError as exc:
            if not self._failing:  # once per outage, not every couple of seconds
                logger.warning("cannot push to %s (%s): live numbers are missing", self.url, exc)
            self._failing = True
        else:
            self._failing = False

    def _loop(self) -> None:
        while True:
            self.push()
            gevent.sleep(self.interval)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._loop)
