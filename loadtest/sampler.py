"""The replicas' own counters once a second while a load test runs: the server side's per-second
numbers, at the client's resolution.

Prometheus scrapes the replicas every 15 s (a production interval, kept), so its samples give a
30-s run two points. For the test window the run reads the same /metrics endpoints itself, once
a second, from the targets Prometheus lists (so the same replicas, natively and under Compose).
Each read is reduced to per-replica sums (requests by status, latency buckets): a sum of counters
of one process is a counter too, and a series that appears adds its value to the sum as it
should, so counters.py's arithmetic applies unchanged. Prometheus stays the source of the
judged totals; these reads give the charts and the throughput after ramp-up, and their sum over
the window is reported beside Prometheus's (they read the same counters, so they agree).

Cost: prometheus_client's parser takes about 8 ms of CPU per replica and read (a 17 KB page)
on the 2-core reference machine, 2-3 % of one core for three replicas, in this process (which is
otherwise idle during the run); generating /metrics costs each replica about 1 ms a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from loadtest.counters import History, Scrapes
from loadtest.httpjson import HttpError, call
from loadtest.prom import Series

REQUESTS = "http_requests_total"
BUCKETS = "http_request_duration_seconds_bucket"
PROCESS_START = "process_start_time_seconds"
# Each kept sample's name and the labels its per-replica sum keeps.
KEPT = {REQUESTS: ("status",), BUCKETS: ("le",)}
PREFIXES = (f"{REQUESTS}{{", f"{BUCKETS}{{", f"{PROCESS_START} ")


def reduce(text: str) -> tuple[dict[tuple[str, str], float], float | None]:
    """One /metrics text as {(metric, label value): sum over the replica's series} and the
    process's start time."""
    # Only the lines wanted go through the parser, which is the slow part.
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(PREFIXES))
    sums: dict[tuple[str, str], float] = {}
    started: float | None = None
    for family in text_string_to_metric_families(wanted + "\n"):
        for sample in family.samples:
            if sample.name == PROCESS_START:
                started = sample.value
            elif sample.name in KEPT:
                (label,) = KEPT[sample.name]
                key = (sample.name, sample.labels.get(label, ""))
                sums[key] = sums.get(key, 0.0) + sample.value
    return sums, started


class Sampler:
    """Reads `targets` ({instance: /metrics URL}) every `interval` seconds in a thread."""

    def __init__(self, targets: Mapping[str, str], interval: float = 1.0) -> None:
        self.targets = dict(targets)
        self.interval = interval
        self.points: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        self.scraped: dict[str, list[float]] = {instance: [] for instance in self.targets}
        self.starts: dict[str, dict[float, float]] = {instance: {} for instance in self.targets}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def _read(self, url: str) -> str | None:
        try:
            answer = call("GET", url, timeout=max(self.interval, 1.0))
        except HttpError:
            return None
        return answer.body.decode() if answer.status == 200 else None

    def read_once(self, within: float | None = None) -> None:
        """Every replica at once, all stamped with the same instant. With `within`, answers later
        than that are dropped: a replica that does not answer (stopped, hung) must delay neither
        the others nor the next read, or one point would hold two seconds' counts; its own next
        answer carries what it counted meanwhile."""
        at = time.time()
        pool = ThreadPoolExecutor(max_workers=max(len(self.targets), 1))
        reads = {instance: pool.submit(self._read, url) for instance, url in self.targets.items()}
        done, _ = wait(reads.values(), timeout=within)
        pool.shutdown(wait=False, cancel_futures=True)  # a late read ends at its own timeout
        for instance, read in reads.items():
            page = read.result() if read in done else None
            if page is None:
                continue  # not a successful read: counters.py treats it like a failed scrape
            sums, started = reduce(page)
            self.scraped[instance].append(at)
            if started is not None:
                self.starts[instance][at] = started
            for (metric, value), total in sums.items():
                self.points.setdefault((instance, metric, value), []).append((at, total))

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.read_once(within=0.9 * self.interval)
            next_at += self.interval
            self._stop.wait(max(next_at - time.monotonic(), 0))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def history(self, metric: str) -> History:
        label = KEPT[metric][0]
        series = [
            Series({"instance": instance, label: value}, points)
            for (instance, name, value), points in self.points.items()
            if name == metric
        ]
        scrapes = {
            instance: Scrapes(times, self.starts[instance])
            for instance, times in self.scraped.items()
        }
        return History(series, scrapes)

    def covers(self, start: float, end: float) -> bool:
        """Whether every replica was read before `start` and after `end`: only then do the
        reads hold the whole window."""
        return bool(self.scraped) and all(
            times and times[0] <= start and times[-1] >= end for times in self.scraped.values()
        )
