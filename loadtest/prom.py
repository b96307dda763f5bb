"""Prometheus's HTTP API: instant and range queries, and waiting for a fresh scrape."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from loadtest.httpjson import HttpError, call
from stack.monitoring_auth import BasicAuth


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]


def _parse_time(text: str) -> float:
    # Go's RFC 3339 carries nanoseconds; datetime takes at most microseconds.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


class Prometheus:
    def __init__(self, url: str, auth: BasicAuth | None, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # Prometheus answers every path, /-/ready included, only with the monitoring credential.
        self.headers = auth.header if auth else {}

    def _refused(self, status: int) -> None:
        if status == 401:
            raise PrometheusError(
                f"Prometheus at {self.url} refused the monitoring credential (401): set "
                "MONITORING_PASSWORD to the stack's (its .env)"
            )

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            answer = call(
                "GET", f"{self.url}{path}?{urlencode(params)}", None, self.headers, self.timeout
            )
        except HttpError as exc:
            raise PrometheusError(f"Prometheus at {self.url} did not answer: {exc}") from exc
        self._refused(answer.status)
        body = answer.json() if answer.body else {}
        if answer.status != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer.status} {body.get('error', body)}")
        return body["data"]

    def ready(self) -> bool:
        try:
            status = call("GET", f"{self.url}/-/ready", headers=self.headers, timeout=5).status
        except HttpError:
            return False
        self._refused(status)
        return status == 200

    def query(self, expr: str, at: float) -> list[Sample]:
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        data = self._get("/api/v1/query_range", params)
        return [
            Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]])
            for r in data["result"]
        ]

    def samples(self, selector: str, span_seconds: int, at: float) -> list[Series]:
        """The raw samples of `selector` in the `span_seconds` before `at`, with their own
        timestamps (an instant query of a range vector: no step, no interpolation)."""
        data = self._get(
            "/api/v1/query", {"query": f"{selector}[{span_seconds}s]", "time": f"{at:.3f}"}
        )
        return [
            Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]])
            for r in data["result"]
        ]

    def targets(self, job: str) -> list[dict[str, Any]]:
        data = self._get("/api/v1/targets", {"state": "active"})
        return [t for t in data["activeTargets"] if t["labels"].get("job") == job]

    def scrape_interval(self, job: str = "api") -> float:
        targets = self.targets(job)
        if not targets or "scrapeInterval" not in targets[0]:
            return 15.0
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", targets[0]["scrapeInterval"])
        if match is None:
            return 15.0
        return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]

    def wait_for_scrape(self, job: str, after: float, timeout: float) -> float:
        """Wait until every target of `job` was scraped after `after`; return the newest scrape.

        Counters read at that moment hold everything the targets counted up to `after`, which is
        what makes the test window's edges exact.
        """
        deadline = time.monotonic() + timeout
        stale: list[str] = []
        while time.monotonic() < deadline:
            targets = self.targets(job)
            if not targets:
                raise PrometheusError(f"Prometheus at {self.url} has no {job} targets")
            scraped = {t["scrapeUrl"]: _parse_time(t["lastScrape"]) for t in targets}
            stale = [url for url, at in scraped.items() if at <= after]
            if scraped and not stale:
                # A scrape's samples are committed just after lastScrape is set.
                time.sleep(0.2)
                return max(scraped.values())
            time.sleep(0.25)
        raise PrometheusError(f"no scrape of {job} targets {stale} after {after:.0f} in {timeout}s")
