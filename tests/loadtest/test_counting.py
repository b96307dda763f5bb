"""Counting what the counters and the users did: restarts, the 1-s reads of /metrics, what the
users offered. Nothing here imports Locust (it would patch this process with gevent)."""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import MetricsHandler, generate_latest

from loadtest.client import steady_rps
from loadtest.counters import History, Scrapes, increments, scrapes_from
from loadtest.model import Offered, Window
from loadtest.prom import Series
from loadtest.sampler import BUCKETS, REQUESTS, Sampler, reduce
from loadtest.schedule import Arrivals, Tally
from loadtest.server import steady_rps as server_steady_rps

NEW = 1000.0  # the new process started here; its replicas are scraped every 10 s from 1010


def _scrapes(times: list[float], start: float | None = None) -> Scrapes:
    return Scrapes(times, dict.fromkeys(times, start) if start is not None else {})


def test_an_old_process_value_within_the_lookback_is_not_a_baseline() -> None:
    """The issue's case: after a restart (Prometheus down meanwhile, so no staleness marker) an
    instant query at the window's start returns the old process's 12 for a series the new
    process creates only later. Counting from it hid 12 requests; from zero, none are lost."""
    old = [(880.0, 10.0), (890.0, 11.0), (900.0, 12.0)]
    new = [(1030.0, 3.0), (1040.0, 20.0), (1050.0, 40.0)]
    # The new process's scrapes at 1010 and 1020 did not have the series: it is new since.
    scrapes = Scrapes([880.0, 890.0, 900.0, 1010.0, 1020.0, 1030.0, 1040.0, 1050.0])
    assert list(increments(old + new, scrapes)) == [
        (890.0, 1.0),
        (900.0, 1.0),
        (1030.0, 3.0),
        (1040.0, 17.0),
        (1050.0, 20.0),
    ]
    window_from_1025 = History([Series({}, old + new)], {"": scrapes}).counted((), 1025, 1060)
    assert window_from_1025 == {(): 40.0}


def test_a_new_process_is_seen_by_its_start_time_when_no_scrape_saw_the_gap() -> None:
    """Prometheus was down while the replica restarted, and the new process had already counted
    more than the old one had: only process_start_time_seconds tells."""
    points = [(900.0, 5.0), (1010.0, 9.0), (1020.0, 11.0)]
    starts = {900.0: 100.0, 1010.0: NEW, 1020.0: NEW}
    scrapes = Scrapes([900.0, 1010.0, 1020.0], starts)
    assert list(increments(points, scrapes)) == [(1010.0, 9.0), (1020.0, 2.0)]
    # Without the start times it would look like an ordinary increase of 4.
    assert next(increments(points, Scrapes([900.0, 1010.0, 1020.0]))) == (1010.0, 4.0)


def test_a_failed_scrape_is_not_a_restart_but_a_drop_is() -> None:
    up = Series({"instance": "a"}, [(10.0, 1.0), (20.0, 0.0), (30.0, 1.0), (40.0, 1.0)])
    (scrapes,) = scrapes_from([up]).values()
    assert scrapes.times == [10.0, 30.0, 40.0]
    # The failed scrape at 20 left no sample (a staleness marker is not returned): continuous.
    assert list(increments([(10.0, 5.0), (30.0, 8.0), (40.0, 2.0)], scrapes)) == [
        (30.0, 3.0),
        (40.0, 2.0),  # went down: a restart nothing else revealed, counted from zero
    ]


def test_the_first_sample_is_a_base_unless_an_earlier_scrape_lacked_the_series() -> None:
    scrapes = _scrapes([10.0, 20.0, 30.0])
    assert list(increments([(10.0, 7.0), (20.0, 9.0)], scrapes)) == [(20.0, 2.0)]
    assert list(increments([(20.0, 7.0), (30.0, 9.0)], scrapes)) == [(20.0, 7.0), (30.0, 2.0)]


def test_counted_steps_and_rate_add_up() -> None:
    scrapes = {"a": _scrapes([0.0, 1.0, 2.0, 3.0, 4.0]), "b": _scrapes([0.5, 1.5, 2.5, 3.5])}
    series = [
        Series({"instance": "a", "status": "200"}, [(0.0, 10), (1, 14), (2, 20), (3, 20), (4, 25)]),
        Series({"instance": "a", "status": "503"}, [(2.0, 1.0), (3.0, 2.0)]),
        Series({"instance": "b", "status": "200"}, [(0.5, 0), (1.5, 6), (2.5, 6), (3.5, 12)]),
    ]
    history = History(series, scrapes)
    assert history.counted(("status",), 0.2, 10) == {("200",): 27.0, ("503",): 2.0}
    steps = history.steps((), 0.2, 1.0)[()]
    assert sum(steps.values()) == 29.0
    assert steps == {0.7: 4.0, 1.7: 13.0, 2.7: 1.0, 3.7: 11.0}
    # a: 13 requests over its scrapes 1..4 s; b: 6 over 1.5..3.5 s.
    count, per_second = history.rate(1.0, 4.0) or (0.0, 0.0)
    assert count == 19.0
    assert per_second == pytest.approx(13 / 3 + 6 / 2)
    assert History(series, {"a": _scrapes([1.0])}).rate(1.0, 4.0) is None


def _registry() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    requests = Counter("http_requests", "", ["handler", "method", "status"], registry=registry)
    latency = Histogram(
        "http_request_duration_seconds", "", ["handler", "method"], registry=registry
    )
    return registry, requests, latency


def test_a_metrics_page_is_reduced_to_per_replica_sums() -> None:
    registry, requests, latency = _registry()
    requests.labels("/items", "GET", "200").inc(5)
    requests.labels("/items/{item_id}", "GET", "200").inc(2)
    requests.labels("/items/{item_id}", "GET", "503").inc(1)
    for seconds in (0.002, 0.02, 0.2):
        latency.labels("/items", "GET").observe(seconds)
    sums, started = reduce(generate_latest(registry).decode())
    assert sums[REQUESTS, "200"] == 7.0
    assert sums[REQUESTS, "503"] == 1.0
    assert sums[BUCKETS, "0.025"] == 2.0
    assert sums[BUCKETS, "+Inf"] == 3.0
    assert started is not None
    assert started > 1e9


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[str, Counter]]:
    """A real /metrics endpoint (prometheus_client's own handler) on a free loopback port."""
    registry, requests, _ = _registry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", requests
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_the_sampler_counts_what_the_endpoint_counted_second_by_second(
    metrics_endpoint: tuple[str, Counter],
) -> None:
    url, requests = metrics_endpoint
    requests.labels("/items", "GET", "200").inc(100)  # before the window: the base
    sampler = Sampler({"a": url}, interval=0.2)
    with sampler:
        while not sampler.scraped["a"]:
            threading.Event().wait(0.05)
        start = sampler.scraped["a"][-1]
        for status in ("200", "404", "503", "200"):
            requests.labels("/items", "GET", status).inc(3)
            threading.Event().wait(0.3)
    sampler.read_once()
    assert sampler.covers(start, sampler.scraped["a"][-1])
    counted = sampler.history(REQUESTS).counted(("status",), start, math.inf)
    assert counted == {("200",): 6.0, ("404",): 3.0, ("503",): 3.0}


class _Hung(BaseHTTPRequestHandler):
    """A replica that accepts the connection and never answers in time (as when SIGSTOPped)."""

    def do_GET(self) -> None:
        time.sleep(3)

    def log_message(self, *_: object) -> None:
        pass


def test_a_hung_replica_does_not_hold_up_the_reads_of_the_others(
    metrics_endpoint: tuple[str, Counter],
) -> None:
    """Otherwise one point would hold two seconds' counts (and the chart twice the rate)."""
    url, _ = metrics_endpoint
    hung = ThreadingHTTPServer(("127.0.0.1", 0), _Hung)
    thread = threading.Thread(target=hung.serve_forever, daemon=True)
    thread.start()
    try:
        hung_url = f"http://127.0.0.1:{hung.server_address[1]}/metrics"
        sampler = Sampler({"ok": url, "hung": hung_url}, interval=0.4)
        with sampler:
            time.sleep(3)
    finally:
        hung.shutdown()
        thread.join()
        hung.server_close()
    reads = sampler.scraped["ok"]
    assert sampler.scraped["hung"] == []
    assert len(reads) >= 4
    # Each wait for the hung one would have taken its whole 1-s read timeout.
    assert max(b - a for a, b in itertools.pairwise(reads)) < 1.0


def test_offered_and_answered_are_compared_over_the_whole_seconds_after_ramp_up() -> None:
    window = Window(start=100.4, end=110.6, spawned=102.5)
    assert list(window.steady_seconds()) == list(range(103, 110))
    arrivals = {s: 10 for s in range(100, 112)}
    offered = Offered.count(arrivals, window, planned_rps=10.0)
    assert (offered.steady_rps, offered.steady_seconds) == (10.0, 7)
    entries = [{"num_reqs_per_sec": {str(s): 9 for s in range(100, 111)}}]
    assert steady_rps(entries, window) == 9.0
    per_replica = Series({"instance": "a"}, [(s + 0.5, 9.0 * (s - 99)) for s in range(99, 112)])
    history = History([per_replica], {"a": _scrapes([s + 0.5 for s in range(99, 112)])})
    assert server_steady_rps(history, window) == pytest.approx(9.0)


def test_every_arrival_is_offered_once_and_a_busy_user_misses_some() -> None:
    tally = Tally()
    rate, now = 4.0, 1000.0
    user = Arrivals(rate, random.Random(1), tally, now)
    sent = 1  # the first request goes out as the user starts
    while now < 1100:
        now += user.wait(now)
        sent += 1
    answered_at_once = sum(tally.per_second.values())
    assert sent == answered_at_once  # no latency: every arrival was sent
    assert user.missed == 0
    assert abs(sent - rate * 100) < 5 * math.sqrt(rate * 100)

    slow_tally, now = Tally(), 1000.0
    busy = Arrivals(rate, random.Random(2), slow_tally, now)
    sent = 1
    while now < 1100:
        now += 0.5  # every answer takes 0.5 s: two arrivals per answer on average
        now += busy.wait(now)
        sent += 1
    offered = sum(slow_tally.per_second.values())
    assert busy.missed > 0
    assert sent + busy.missed == offered
    assert sent < 0.6 * offered


def test_workers_reports_add_up_on_the_master() -> None:
    """Each worker sends what it counted since its last report, and when its last user started;
    the master adds them up (locustfile.py carries them in Locust's own worker reports)."""
    workers = [Tally(), Tally()]
    Arrivals(1.0, random.Random(3), workers[0], 100.2)
    Arrivals(1.0, random.Random(4), workers[1], 101.7)
    master = Tally()
    for worker in workers:
        master.merge(worker.report())
        assert worker.report()["per_second"] == {}  # reported once
    assert master.per_second == {100: 1, 101: 1}
    assert master.last_start == 101.7
