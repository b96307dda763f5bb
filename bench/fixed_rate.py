"""Locust at a fixed request rate, with latencies free of coordinated omission.

Run by bench/locust_driver.py, one path at a time (no Debian package ships wrk2):

    BENCH_RATE=2000 BENCH_USERS=100 BENCH_PATH=/items/1 BENCH_OUT=out.json \
        locust -f bench/fixed_rate.py --headless -u 100 -r 100 -t 15s --host http://127.0.0.1:8080

Each user owns a fixed schedule (one request every users/rate seconds, offsets spread evenly),
like Locust's constant_throughput wait time but without its forgetting: a request that starts
late because the previous one was slow is timed from when it *should* have started. That is what
wrk2 does, and what a client arriving at a steady rate sees; timing from the actual send (wrk,
plain Locust) hides the queueing a stall causes (coordinated omission).

On a 2-core machine the generator shares the CPU with the stack it measures, so it is kept lean:
each user is one keep-alive socket speaking just enough HTTP/1.1 (a prepared request, the status
line, Content-Length), and latencies go to a list rather than through Locust's per-request events
and statistics. Locust's HttpUser cost about as much CPU per request as the cached GET it measured.

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
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

_AUTH = f"Authorization: Bearer {TOKEN}\r\n" if TOKEN else ""
_BODY_HEADERS = f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n" if BODY else ""
# gevent runs every user on one OS thread, so plain iterators and lists are safe to share.
_ids = itertools.cycle(range(ID_FIRST, ID_LAST + 1)) if ID_LAST else None
_started = time.perf_counter()
_cpu_at_start = 0.0
_ticks_at_start = (0, 0)
_latencies: list[float] = []  # from the scheduled start, seconds
_service_times: list[float] = []  # from the actual send, seconds (what wrk would report)
_errors: dict[str, int] = {}
_late_starts = 0
_sent = 0  # every request, warm-up included
# Answered 2xx/3xx after the warm-up: the achieved rate counts only these, so quick refusals
# (nginx's 429s once more requests are in progress than it allows) never pass for capacity.
_succeeded = 0
_user_slots = itertools.count()


class _Connection:
    """One keep-alive HTTP/1.1 connection; Locust's gevent makes its socket cooperative."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.host = host
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method: str, path: str) -> int:
        """Send one request, read its whole response; the status code."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{_AUTH}{_BODY_HEADERS}\r\n"
        sock = self.sock or self._connect()
        sock.sendall(head.encode() + BODY)
        while b"\r\n\r\n" not in self.buffer:
            self._receive(sock)
        header, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = header.lower().split(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
        length = int(fields.get(b"content-length", b"0"))
        while len(rest) < length:
            rest += self._receive(sock, into_buffer=False)
        self.buffer = rest[length:]
        # nginx closes a client connection after keepalive_requests; so does any error path.
        if fields.get(b"connection") == b"close":
            self.close()
        return int(lines[0].split(b" ", 2)[1])

    def _receive(self, sock: socket.socket, *, into_buffer: bool = True) -> bytes:
        data = sock.recv(65536)
        if not data:
            self.close()
            raise ConnectionError("the server closed the connection")
        if into_buffer:
            self.buffer += data
        return data


class FixedRateUser(User):
    def on_start(self) -> None:
        origin = urlsplit(self.host or "http://127.0.0.1")
        self.http = _Connection(origin.hostname or "127.0.0.1", origin.port or 80)
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
        global _late_starts, _sent, _succeeded  # noqa: PLW0603 - counters of the single-threaded run
        due = self.next_due
        self.next_due += self.interval
        sent = time.perf_counter()
        if sent - due > self.interval:
            _late_starts += 1
        path = f"{PATH}{next(_ids)}" if _ids is not None else PATH
        _sent += 1
        try:
            status = str(self.http.request(METHOD, path))
        except Exception as exc:  # a failed request is a sample, not a crash
            self.http.close()
            status = type(exc).__name__
        done = time.perf_counter()
        if not status.startswith(("2", "3")):
            _errors[status] = _errors.get(status, 0) + 1
        if due - _started >= WARMUP_SECONDS:
            _latencies.append(done - due)
            _service_times.append(done - sent)
            _succeeded += status.startswith(("2", "3"))


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy_since(start: tuple[int, int]) -> float:
    busy, total = _machine_ticks()
    return (busy - start[0]) / max(total - start[1], 1)


def summary(elapsed: float) -> dict[str, Any]:
    latencies = sorted(_latencies)
    service = sorted(_service_times)
    measured = max(elapsed - WARMUP_SECONDS, 1e-9)
    return {
        "target_rate": RATE,
        "achieved_rate": _succeeded / measured,
        "requests": len(latencies),
        "errors": _errors,
        "late_starts": _late_starts,
        "sent": _sent,
        # The generator's own CPU while it ran (its start-up excluded), in cores.
        "generator_cpu_share": (_cpu_seconds() - _cpu_at_start) / max(elapsed, 1e-9),
        # How busy the whole machine was meanwhile (all CPUs, every process, ours and others').
        "machine_busy_share": _busy_since(_ticks_at_start),
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
    global _started, _cpu_at_start, _ticks_at_start  # noqa: PLW0603 - the clocks start with the test
    # A collector pause in the generator would be timed as server latency; a 15 s run keeps
    # every sample anyway.
    gc.freeze()
    gc.disable()
    _started = time.perf_counter()
    _cpu_at_start = _cpu_seconds()
    _ticks_at_start = _machine_ticks()


def _on_quit(environment: Environment, **_: Any) -> None:
    if OUT:
        Path(OUT).write_text(json.dumps(summary(time.perf_counter() - _started), indent=2))


# Registered by call: Locust's decorator form is untyped.
events.test_start.add_listener(_on_start)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_on_quit)  # type: ignore[no-untyped-call]
