"""The client's side of a run, from the files Locust's master wrote (locust.json and the CSVs)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.model import (
    RouteNumbers,
    SideNumbers,
    Window,
    latency_from_histogram,
    merge,
    route_key,
)
from loadtest.thresholds import Thresholds


def _histogram(entry: dict[str, Any]) -> dict[float, int]:
    return {float(ms): int(count) for ms, count in entry["response_times"].items()}


def load_entries(folder: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((folder / "locust.json").read_text())
    return entries


def per_second(entries: list[dict[str, Any]], key: str) -> dict[int, int]:
    """Locust's exact counts per wall-clock second ("num_reqs_per_sec", "num_fail_per_sec"),
    summed over request names: a request counts in the second its answer came."""
    counts: dict[int, int] = {}
    for entry in entries:
        for second, count in entry[key].items():
            counts[int(second)] = counts.get(int(second), 0) + count
    return counts


def steady_rps(entries: list[dict[str, Any]], window: Window) -> float | None:
    seconds = window.steady_seconds()
    answered = per_second(entries, "num_reqs_per_sec")
    return sum(answered.get(s, 0) for s in seconds) / len(seconds) if seconds else None


def numbers(folder: Path, window: Window, thresholds: Thresholds) -> SideNumbers:
    entries = load_entries(folder)
    by_route: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_route.setdefault(route_key(entry["method"], entry["name"]), []).append(entry)
    routes = {
        route: RouteNumbers(
            route=route,
            requests=sum(e["num_requests"] for e in group),
            failures=sum(e["num_failures"] for e in group),
            latency=latency_from_histogram(merge(_histogram(e) for e in group)),
        )
        for route, group in sorted(by_route.items())
    }
    groups = {
        group.name: latency_from_histogram(
            merge(_histogram(e) for r in group.routes for e in by_route.get(r, []))
        )
        for group in thresholds.groups
    }
    return SideNumbers(
        side="client",
        requests=sum(e["num_requests"] for e in entries),
        failures=sum(e["num_failures"] for e in entries),
        seconds=window.seconds,
        routes=routes,
        groups=groups,
        steady_rps=steady_rps(entries, window),
    )


@dataclass
class ClientSeries:
    """Locust's numbers over time.

    Users and percentiles come from its per-second history (locust_stats_history.csv; the
    percentiles cover the last 10 s, as in its UI); requests and failures are exact counts per
    second from locust.json, not the UI's smoothed "current RPS".
    """

    time: list[float] = field(default_factory=list)
    users: list[float] = field(default_factory=list)
    latency: dict[str, list[float | None]] = field(default_factory=dict)
    second: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    failures_per_s: list[float] = field(default_factory=list)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "N/A" before the first answer


def series(folder: Path) -> ClientSeries:
    result = ClientSeries(latency={"p50": [], "p95": [], "p99": []})
    with (folder / "locust_stats_history.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            if row["Name"] != "Aggregated":
                continue
            result.time.append(float(row["Timestamp"]))
            result.users.append(float(row["User Count"]))
            for name, column in (("p50", "50%"), ("p95", "95%"), ("p99", "99%")):
                result.latency[name].append(_number(row[column]))
    entries = load_entries(folder)
    requests = per_second(entries, "num_reqs_per_sec")
    failures = per_second(entries, "num_fail_per_sec")
    if requests:
        # Every second from the first to the last request, idle ones included as zeros.
        seconds = range(min(requests), max(requests) + 1)
        result.second = [float(s) for s in seconds]
        result.rps = [float(requests.get(s, 0)) for s in seconds]
        result.failures_per_s = [float(failures.get(s, 0)) for s in seconds]
    return result


def top_failures(folder: Path, limit: int = 10) -> list[tuple[str, str, int]]:
    """(request, error, occurrences) from locust_failures.csv, most frequent first."""
    path = folder / "locust_failures.csv"
    if not path.exists():
        return []
    with path.open(newline="") as file:
        rows = [
            (f"{r['Method']} {r['Name']}", r["Error"], int(r["Occurrences"]))
            for r in csv.DictReader(file)
        ]
    return sorted(rows, key=lambda row: -row[2])[:limit]


def exceptions(folder: Path) -> int:
    """Errors raised inside tasks (not answers): each one is a bug in the run, never load."""
    path = folder / "locust_exceptions.csv"
    if not path.exists():
        return 0
    with path.open(newline="") as file:
        return sum(int(row["Count"]) for row in csv.DictReader(file))
