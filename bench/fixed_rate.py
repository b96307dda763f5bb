"""Locust at a fixed request rate, with latencies free of coordinated omission.

Run by bench/run.py, one path at a time (no Debian package ships wrk2):

    BENCH_RATE=2000 BENCH_USERS=100 BENCH_PATH=/items/1 BENCH_OUT=out.json \
        locust -f bench/fixed_rate.py --headless -u 100 -r 100 -t 15s --host http://127.0.0.1:8080

Each user owns a fixed schedule (one request every users/rate seconds, offsets spread evenly),
like Locust's constant_throughput wait time but without its forgetting: a request that starts
late because the previous one was slow is timed from when it *should* have started. That is what
wrk2 does, and what a client arriving at a steady rate sees; timing from the actual send (wrk,
plain Locust) hides the queueing a stall causes (coordinated omission).

On a 2-core machine the generator shares the CPU with the stack it measures, so it is kept lean:
each user is one keep-alive geventhttpclient connection, and latencies are kept in a list rather
than going through Locust's per-request events and statistics (which cost several times more CPU
per request than the cached GET it would measure).

Settings (environment): BENCH_RATE (requests/s, all users together), BENCH_USERS (= -u),
BENCH_PATH, BENCH_METHOD (GET or POST), BENCH_BODY (JSON for POST), BENCH_TOKEN (bearer token),
BENCH_ID_FIRST and BENCH_ID_LAST (when set, BENCH_PATH gets a fresh id appended each request:
uncached reads), BENCH_WARMUP_SECONDS (samples scheduled before this are dropped), BENCH_OUT (JSON
written at the end).
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import resource
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from geventhttpclient import HTTPClient
from locust import User, events, task
from locust.env import Environment

RATE = float(os.environ.get("BENCH_RATE", "100"))
# Must equal Locust's -u: each user's share of the rate is RATE / USERS.
USERS = int(os.environ.get("BENCH_USERS", "10"))
PATH = os.environ.get("BENCH_PATH", "/")
METHOD = os.environ.get("BENCH_METHOD", "GET")
BODY = os.environ.get("BENCH_BODY", "").encode()
TOKEN = os.environ.get("BENCH_TOKEN", "")
ID_FIRST = int(os.environ.get("BENCH_ID_FIRST", "0"))
ID_LAST = int(os.environ.get("BENCH_ID_LAST", "0"))
WARMUP_SECONDS = float(os.environ.get("BENCH_WARMUP_SECONDS", "3"))
OUT = os.environ.get("BENCH_OUT", "")

HEADERS = {"Content-Type": "application/json"} | (
    {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
)
# gevent runs every user on one OS thread, so plain iterators and lists are safe to share.
_ids = itertools.cycle(range(ID_FIRST, ID_LAST + 1)) if ID_LAST else None
_started = time.perf_counter()
_cpu_at_start = 0.0
_latencies: list[float] = []  # from the scheduled start, seconds
_service_times: list[float] = []  # from the actual send, seconds (what wrk would report)
_errors: dict[str, int] = {}
_late_starts = 0
_user_slots = itertools.count()


class FixedRateUser(User):
    def on_start(self) -> None:
        origin = urlsplit(self.host or "http://127.0.0.1")
        self.http = HTTPClient(
            origin.hostname or "127.0.0.1", origin.port, concurrency=1, network_timeout=30
        )
        self.interval = USERS / RATE
        # Spread users over one interval so their requests do not arrive in lockstep.
        slot = next(_user_slots) % USERS
        self.next_due = time.perf_counter() + self.interval * slot / USERS

    def on_stop(self) -> None:
        self.http.close()

    def wait_time(self) -> float:
        return max(0.0, self.next_due - time.perf_counter())

    @task
    def fire(self) -> None:
        global _late_starts  # noqa: PLW0603 - one counter for the whole single-threaded run
        due = self.next_due
        self.next_due += self.interval
        sent = time.perf_counter()
        if sent - due > self.interval:
            _late_starts += 1
        path = f"{PATH}{next(_ids)}" if _ids is not None else PATH
        try:
            response = self.http.request(METHOD, path, body=BODY, headers=HEADERS)
            response.read()  # the connection is reused only once the body is consumed
            status = str(response.status_code)
        except Exception as exc:  # a failed request is a sample, not a crash
            status = type(exc).__name__
        done = time.perf_counter()
        if not status.startswith(("2", "3")):
            _errors[status] = _errors.get(status, 0) + 1
        if due - _started >= WARMUP_SECONDS:
            _latencies.append(done - due)
            _service_times.append(done - sent)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summary(elapsed: float) -> dict[str, Any]:
    latencies = sorted(_latencies)
    service = sorted(_service_times)
    measured = max(elapsed - WARMUP_SECONDS, 1e-9)
    return {
        "target_rate": RATE,
        "achieved_rate": len(latencies) / measured,
        "requests": len(latencies),
        "errors": _errors,
        "late_starts": _late_starts,
        # The generator's own CPU while it ran (its start-up excluded), in cores.
        "generator_cpu_share": (_cpu_seconds() - _cpu_at_start) / max(elapsed, 1e-9),
        "latency_ms": {
            name: _percentile(latencies, q) * 1000
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))
        }
        | {"max": (latencies[-1] * 1000) if latencies else float("nan")},
        "service_time_ms": {
            name: _percentile(service, q) * 1000 for name, q in (("p50", 0.5), ("p99", 0.99))
        },
    }


def _on_start(environment: Environment, **_: Any) -> None:
    global _started, _cpu_at_start  # noqa: PLW0603 - the run's clock starts with the test
    # A collector pause in the generator would be timed as server latency; a 15 s run keeps
    # every sample anyway.
    gc.freeze()
    gc.disable()
    _started = time.perf_counter()
    _cpu_at_start = _cpu_seconds()


def _on_quit(environment: Environment, **_: Any) -> None:
    if OUT:
        Path(OUT).write_text(json.dumps(summary(time.perf_counter() - _started), indent=2))


# Registered by call: Locust's decorator form is untyped.
events.test_start.add_listener(_on_start)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_on_quit)  # type: ignore[no-untyped-call]
