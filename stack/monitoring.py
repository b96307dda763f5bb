"""The one HTTP client the tooling and the tests use to read a stack's Prometheus, Alertmanager and
Pushgateway, whichever runner started it: every request goes through `client`, so the monitoring
credential (stack/monitoring_auth.py) those services require is added in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Result = list[dict[str, Any]]


@dataclass(frozen=True)
class Monitoring:
    prometheus: str
    alertmanager: str
    pushgateway: str | None = None
    # The monitoring credential; None only for a stack without one.
    auth: httpx.BasicAuth | None = field(default=None, repr=False)
    timeout: float = 10

    def url(self, service: str) -> str:
        """The base URL of "prometheus", "alertmanager" or "pushgateway"."""
        urls = {
            "prometheus": self.prometheus,
            "alertmanager": self.alertmanager,
            "pushgateway": self.pushgateway,
        }
        url = urls[service]
        if url is None:
            raise ValueError(f"this stack's {service} is not reachable from here")
        return url

    def client(self, service: str) -> httpx.Client:
        """A client for one of the three, with the credential."""
        return httpx.Client(base_url=self.url(service), auth=self.auth, timeout=self.timeout)

    def _get(self, url: str, params: dict[str, str] | None = None) -> Any:
        response = httpx.get(url, params=params, auth=self.auth, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def query(self, promql: str, at: float | None = None) -> Result:
        """An instant query, now or at a Unix time."""
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        result: Result = self._get(f"{self.prometheus}/api/v1/query", params)["data"]["result"]
        return result

    def wait_for(
        self, promql: str, predicate: Callable[[Result], bool], timeout: float = 30
    ) -> Result:
        """Query until the predicate holds; an AssertionError with the last result otherwise."""
        deadline = time.monotonic() + timeout
        result: Result = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql} never satisfied the check; last result: {result}")

    def alerts(self) -> Result:
        """Prometheus's alerts, pending and firing."""
        alerts: Result = self._get(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return alerts

    def targets(self) -> Result:
        """Prometheus's active scrape targets."""
        found: Result = self._get(f"{self.prometheus}/api/v1/targets")["data"]["activeTargets"]
        return found

    def alertmanager_alerts(self, matcher: str | None = None) -> Result:
        """Alertmanager's alerts (v2 API), those matching a matcher such as `alertname="X"`."""
        params = {"filter": matcher} if matcher else None
        alerts: Result = self._get(f"{self.alertmanager}/api/v2/alerts", params)
        return alerts

    def pushgateway_groups(self) -> Result:
        groups: Result = self._get(f"{self.url('pushgateway')}/api/v1/metrics")["data"]
        return groups
