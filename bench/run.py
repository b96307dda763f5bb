"""`make bench`: the stack's paths measured against its ceilings, side by side in one run.

    uv run python -m bench.run [--duration 10] [--replicas 2] [--profile] [--only cached,hello]

Everything runs on loopback, bounded in time (--budget, 15 minutes by default; a run takes about 8):

1. Ceilings, each served the way a replica is (one Uvicorn process, uvloop + httptools):
   nginx answering a constant, a bare ASGI app, a FastAPI hello.
2. A native stack (`python -m stack.native up`) in a temporary folder on free ports, seeded with
   items, and its paths through nginx: cached GET /items/{id}, uncached GET /items/{id} (a fresh
   id per request, so every one misses Redis and reads PostgreSQL), GET /items (a page), and
   POST /items.
3. Instrumentation overhead: the cached path with METRICS_ENABLED=false on one replica and true
   on the other, side by side, each driven straight by its own wrk, then swapped.
4. For the rows with a CPU target (cached and uncached), two more (hello, path) pairs of runs:
   the verdict is the median ratio. And their fixed-rate latency again, at 70% of the rate the
   stack sustains while Locust itself runs on the same cores.

Each row is wrk at fixed concurrency (-t1 -c64) for throughput and latency, then a fixed-rate
Locust run at 70% of that throughput (bench/fixed_rate.py), whose latencies are timed from the
scheduled send and so free of coordinated omission. CPU per request comes from the processes'
own CPU time (/proc/<pid>/stat), summed over every API replica; nginx, PostgreSQL, Redis and
supervisord (which copies every log line) are reported on their own. Results go to
bench/results/ as JSON and markdown, and the table is printed.
"""

# ruff: noqa: S603, S607, S310, RUF001, RUF003 - local binaries, loopback URLs; the report says ×
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import redis

from bench.procs import CpuMeter, Group, rss_bytes
from bench.profile import profile_summary
from stack.envfile import ensure_env
from stack.ephemeral import ephemeral_env
from stack.paths import REPO_ROOT
from stack.procs import free_port, stop_process
from stack.topology import Topology

BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
HOST = "127.0.0.1"
# Rows of the stack's paths, in table order; `hello` is the unit of the CPU ratios.
CEILINGS = ("nginx", "bare", "hello")
STACK_PATHS = ("cached", "uncached", "page", "create")
METRICS_PAIR = ("metrics_off", "metrics_on")
# Rows with a CPU-ratio target get RATIO_PAIRS (hello, path) pairs of runs; the median counts.
RATIO_TARGETS = ("cached", "uncached")
RATIO_PAIRS = 3
# Rows whose fixed-rate latency is also measured against the capacity Locust leaves the stack.
SHARED_PATHS = ("cached", "uncached")
LABELS = {
    "nginx": "nginx `return 200` (1 worker)",
    "bare": "bare ASGI app (1 Uvicorn)",
    "hello": "FastAPI hello (1 Uvicorn)",
    "cached": "GET /items/{id}, cached",
    "uncached": "GET /items/{id}, uncached",
    "page": "GET /items (page of 20)",
    "create": "POST /items",
    "metrics_off": "GET /items/{id}, cached, METRICS_ENABLED=false",
    "metrics_on": "GET /items/{id}, cached, METRICS_ENABLED=true",
}
MB = 1024 * 1024


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    connections: int
    fixed_seconds: int
    fixed_fraction: float
    replicas: int
    items: int
    budget: int
    profile: bool
    only: frozenset[str]

    def wants(self, name: str) -> bool:
        return not self.only or name in self.only


@dataclass
class Deadline:
    seconds: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def check(self, need: float, what: str) -> None:
        if self.left() < need:
            raise BenchError(
                f"time budget ({self.seconds:.0f} s) spent before {what}; see --budget"
            )


# --- wrk ---------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if done is None or rps is None:
        raise BenchError(f"unexpected wrk output:\n{output}")
    seconds = float(done[2]) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done[3]]
    percentiles = {
        int(m[1]): float(m[2]) * _UNITS[m[3]]
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    }
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx[1]) if non_2xx else 0
    return WrkResult(
        requests=int(done[1]),
        seconds=seconds,
        rps=float(rps[1]),
        p50_ms=percentiles.get(50, math.nan),
        p90_ms=percentiles.get(90, math.nan),
        p99_ms=percentiles.get(99, math.nan),
        errors=errors,
    )


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script is not None:
        argv += ["-s", str(script)]
    result = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"wrk failed: {result.stdout}{result.stderr}")
    return parse_wrk(result.stdout)


def wrk_script(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.lua"
    path.write_text(body)
    return path


def fresh_ids_script(folder: Path, first: int, last: int) -> Path:
    # -t1: one Lua state, so one counter walks the ids in order and every request is a miss.
    return wrk_script(
        folder,
        "fresh_ids",
        f"""local id = {first - 1}
request = function()
  id = id + 1
  if id > {last} then id = {first} end
  return wrk.format("GET", "/items/" .. id)
end
""",
    )


def post_script(folder: Path, token: str, body: str) -> Path:
    return wrk_script(
        folder,
        "create",
        f"""wrk.method = "POST"
wrk.body = {json.dumps(body)}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
""",
    )


# --- fixed rate (Locust) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One path of a row, described for both wrk and the fixed-rate Locust run."""

    path: str
    method: str = "GET"
    body: str = ""
    token: str = ""
    fresh_ids: tuple[int, int] | None = None  # (first, last): append a new id per request
    script: Path | None = None

    @property
    def wrk_path(self) -> str:
        # A script that builds its own request line (fresh ids) needs only the origin.
        return "/" if self.fresh_ids is not None else self.path


def fixed_rate(
    base_url: str,
    request: Request,
    rate: float,
    seconds: int,
    out: Path,
    groups: list[Group] | None = None,
) -> dict[str, Any]:
    """Locust at `rate`; with `groups`, also their CPU per request sent meanwhile."""
    # Each user sends every users/rate seconds; 50 ms between a user's requests keeps one slow
    # answer from delaying that user's next scheduled send in the usual case.
    users = max(10, math.ceil(rate * 0.05))
    env = {
        **os.environ,
        "BENCH_RATE": f"{rate:.1f}",
        "BENCH_USERS": str(users),
        "BENCH_PATH": request.path,
        "BENCH_METHOD": request.method,
        "BENCH_BODY": request.body,
        "BENCH_TOKEN": request.token,
        "BENCH_OUT": str(out),
        "BENCH_WARMUP_SECONDS": "3",
    }
    if request.fresh_ids is not None:
        env["BENCH_ID_FIRST"], env["BENCH_ID_LAST"] = map(str, request.fresh_ids)
    argv = [
        PYTHON, "-m", "locust", "-f", str(BENCH_DIR / "fixed_rate.py"), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "2",
        "--host", base_url, "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    out.unlink(missing_ok=True)
    meter = CpuMeter(groups or [])
    meter.start()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise BenchError("locust did not finish in time") from None
    if not out.exists():
        raise BenchError(f"locust wrote no result (exit {process.returncode}):\n{stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(out.read_text())
    summary["users"] = users
    # An open-loop load of this rate costs more per request than wrk's saturation did: less
    # work per wake-up in every process. Locust's start-up (a second or two) is included.
    summary["cpu_us_per_request"] = {
        name: used / max(summary["sent"], 1) * 1e6 for name, used in meter.stop().items()
    }
    return summary


# --- servers -----------------------------------------------------------------------------------


def wait_http(url: str, timeout: float = 60.0, method: str = "GET") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            request = urllib.request.Request(url, method=method)
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")


@contextlib.contextmanager
def ceiling_app(target: str, path: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "-m", "bench.apps.serve", target, HOST, str(port)], cwd=REPO_ROOT
    )
    try:
        wait_http(f"http://{HOST}:{port}{path}")
        yield f"http://{HOST}:{port}{path}", process.pid
    finally:
        stop_process(process)


@contextlib.contextmanager
def ceiling_nginx(folder: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    conf_dir = folder / "nginx-ceiling"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "nginx.conf"
    conf.write_text((BENCH_DIR / "nginx-ceiling.conf").read_text().replace("@PORT@", str(port)))
    process = subprocess.Popen(
        ["nginx", "-e", "stderr", "-p", f"{conf_dir}/", "-c", str(conf),
         "-g", f"daemon off; pid {conf_dir / 'nginx.pid'};"]
    )  # fmt: skip
    try:
        wait_http(f"http://{HOST}:{port}/")
        yield f"http://{HOST}:{port}/", process.pid
    finally:
        stop_process(process, signal.SIGQUIT)  # graceful; the workers exit with the master


@dataclass
class Stack:
    folder: Path
    env: dict[str, str]
    topology: Topology

    def native(self, command: str, **extra: str) -> None:
        self.env |= extra
        result = subprocess.run(
            [PYTHON, "-m", "stack.native", command],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"stack.native {command} failed:\n{result.stdout}{result.stderr}")

    @property
    def url(self) -> str:
        return self.topology.url("nginx")

    def settings(self) -> dict[str, str]:
        return {**ensure_env(REPO_ROOT, Path(self.env["STACK_ENV_FILE"])), **self.env}

    def pids(self) -> dict[str, int]:
        conf = self.folder / "stack" / "run" / "supervisord.conf"
        status = subprocess.run(
            [PYTHON, "-m", "supervisor.supervisorctl", "-c", str(conf), "status"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
        found = {
            m[1].split(":")[-1]: int(m[2])
            for m in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+)", status, re.MULTILINE)
        }
        supervisord = (self.folder / "stack" / "run" / "supervisord.pid").read_text().strip()
        found["supervisord"] = int(supervisord)
        return found

    def api_pids(self) -> list[int]:
        return [pid for name, pid in sorted(self.pids().items()) if name.startswith("api-")]

    def groups(self) -> list[Group]:
        pids = self.pids()
        return [
            Group("api", self.api_pids()),
            Group("nginx", [pids["nginx"]]),
            Group("postgres", [pids["postgres"]]),
            Group("redis", [pids["redis"]]),
            Group("supervisord", [pids["supervisord"]], with_children=False),
        ]

    def cache_lookups(self) -> dict[str, float]:
        """api_cache_lookups_total summed over the replicas, read from each one directly."""
        totals: dict[str, float] = {}
        for port in self.topology.api_ports:
            with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            for m in re.finditer(r'^api_cache_lookups_total\{result="(\w+)"\} (\S+)$', text, re.M):
                totals[m[1]] = totals.get(m[1], 0.0) + float(m[2])
        return totals

    def set_metrics(self, enabled: list[bool]) -> None:
        """Restart the replicas with METRICS_ENABLED set per replica (the stack's own copy of
        supervisord.conf is edited; nothing else is touched) and wait until they are ready."""
        conf = self.folder / "stack" / "run" / "supervisord.conf"
        text = conf.read_text()
        for replica, on in enumerate(enabled, start=1):
            start = text.index(f"[program:api-{replica}]")
            end = text.find("\n[", start + 1) % (len(text) + 1)
            section = re.sub(r'METRICS_ENABLED="\w+"', f'METRICS_ENABLED="{str(on).lower()}"',
                             text[start:end])  # fmt: skip
            text = text[:start] + section + text[end:]
        conf.write_text(text)
        # update re-creates the changed group; its programs do not autostart (stack.native
        # starts them in dependency order), hence the start.
        for command in (["reread"], ["update"], ["start", "api:*"]):
            subprocess.run(
                [PYTHON, "-m", "supervisor.supervisorctl", "-c", str(conf), *command],
                capture_output=True, timeout=120, check=False,
            )  # fmt: skip
        for port in self.topology.api_ports:
            wait_http(f"http://{HOST}:{port}/health/ready", timeout=60)

    def flush_cache(self) -> None:
        settings = self.settings()
        client = redis.Redis(
            host=HOST,
            port=self.topology.ports["redis"],
            password=settings["REDIS_PASSWORD"],
            socket_timeout=5,
        )
        try:
            client.flushdb()
        finally:
            client.close()


@contextlib.contextmanager
def native_stack(folder: Path, replicas: int) -> Iterator[Stack]:
    # PostgreSQL runs as its own user and must reach its data folder.
    folder.mkdir(parents=True, exist_ok=True)
    for path in (folder.parent, folder):
        path.chmod(0o755)
    env = ephemeral_env(
        folder,
        replicas,
        # Every request comes from 127.0.0.1: the per-address limit would measure itself.
        NGINX_RATE_LIMIT="1000000r/s",
        SHUTDOWN_GRACE_SECONDS="5",
        METRICS_ENABLED="true",
    )
    stack = Stack(folder, env, Topology.from_env(env))
    try:
        stack.native("up")
        yield stack
    finally:
        with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
            stack.native("down")


def create_owner(base_url: str) -> tuple[int, str]:
    body = json.dumps({"email": f"bench-{time.time_ns()}@example.com", "name": "bench"}).encode()
    request = urllib.request.Request(
        f"{base_url}/users", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        created = json.loads(response.read())
    return int(created["id"]), str(created["token"])


async def _seed_items(settings: Mapping[str, str], port: int, owner: int, count: int) -> range:
    connection = await asyncpg.connect(
        host=HOST,
        port=port,
        user=settings["POSTGRES_USER"],
        password=settings["POSTGRES_PASSWORD"],
        database=settings["POSTGRES_DB"],
        timeout=10,
    )
    try:
        # One statement instead of `count` POSTs: seeding takes a second, not minutes.
        first, last = await connection.fetchrow(
            """WITH created AS (
                 INSERT INTO items (name, description, price, owner_id)
                 SELECT 'item ' || g, 'seeded by make bench', (g % 10000) / 100.0, $1
                 FROM generate_series(1, $2) AS g
                 RETURNING id)
               SELECT min(id), max(id) FROM created""",
            owner,
            count,
        )
        await connection.execute("ANALYZE items")
    finally:
        await connection.close()
    return range(int(first), int(last) + 1)


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    label: str
    primary: str  # the group whose CPU per request is the row's measure
    wrk: WrkResult
    cpu_seconds: dict[str, float]
    fixed: dict[str, Any] | None = None
    cache: dict[str, float] | None = None
    # The FastAPI hello's CPU per request, measured just before this row (see HelloReference).
    hello_us: float = math.nan
    # The machine's 1-minute load when the row ended: how much else was running.
    load: float = field(default_factory=lambda: round(os.getloadavg()[0], 2))

    def cpu_us(self, group: str | None = None) -> float:
        used = self.cpu_seconds.get(group or self.primary)
        if used is None or not self.wrk.requests:
            return math.nan
        return used / self.wrk.requests * 1e6

    # More (path ÷ hello) CPU ratios, each from its own pair of back-to-back runs.
    more_ratios: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [self.cpu_us() / self.hello_us, *self.more_ratios]

    @property
    def ratio(self) -> float:
        """The median of the row's ratios: one pair of runs on a shared machine varies by ±15%."""
        return statistics.median(self.ratios)


@dataclass
class HelloReference:
    """The FastAPI hello, running the whole time and measured again right before each stack row.

    Other work on a shared machine changes every process's CPU per request (caches, the other
    hyperthread), by ±20% from one minute to the next; a ratio of two numbers measured a few
    seconds apart cancels most of that, one against a hello measured minutes earlier does not.
    """

    url: str
    pid: int
    samples: list[float] = field(default_factory=list)

    def measure(self, seconds: int, connections: int) -> float:
        wrk(self.url, 1, connections)
        meter = CpuMeter([Group("hello", [self.pid])])
        meter.start()
        result = wrk(self.url, seconds, connections)
        cpu_us = meter.stop()["hello"] / max(result.requests, 1) * 1e6
        self.samples.append(cpu_us)
        return cpu_us


def measure(
    name: str,
    url: str,
    groups: list[Group],
    primary: str,
    options: Options,
    *,
    script: Path | None = None,
    before_run: Any = None,
) -> tuple[WrkResult, dict[str, float]]:
    if before_run is not None:
        before_run()
    # Warm-up: connections, caches, code paths; its CPU is not counted.
    wrk(url, options.warmup, options.connections, script)
    if before_run is not None:
        before_run()
    meter = CpuMeter(groups)
    meter.start()
    result = wrk(url, options.duration, options.connections, script)
    used = meter.stop()
    per_request = used[primary] / max(result.requests, 1) * 1e6
    print(
        f"  {name:<12} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  {primary} {per_request:7.1f} µs/req",
        flush=True,
    )
    return result, used


def run_ceilings(
    options: Options, folder: Path, deadline: Deadline, hello: HelloReference
) -> list[Row]:
    rows = []
    for name in CEILINGS:
        if not options.wants(name):
            continue
        deadline.check(options.duration + options.warmup + 20, name)
        if name == "hello":
            result, used = measure(name, hello.url, [Group("server", [hello.pid])], "server",
                                   options)  # fmt: skip
            row = Row(name, LABELS[name], "server", result, used)
            hello.samples.append(row.cpu_us())
            rows.append(row)
            continue
        server = (
            ceiling_nginx(folder) if name == "nginx" else ceiling_app("bench.apps.bare:app", "/")
        )
        with server as (url, pid):
            result, used = measure(name, url, [Group("server", [pid])], "server", options)
        rows.append(Row(name, LABELS[name], "server", result, used))
    reference = next((row.cpu_us() for row in rows if row.name == "hello"), math.nan)
    if math.isnan(reference) and rows:
        reference = hello.measure(options.duration, options.connections)
    for row in rows:
        row.hello_us = reference
    return rows


def seed(stack: Stack, folder: Path, options: Options) -> dict[str, Request]:
    """A user and `options.items` items, and the request of every stack row."""
    owner, token = create_owner(stack.url)
    ids = asyncio.run(
        _seed_items(stack.settings(), stack.topology.ports["postgres"], owner, options.items)
    )
    scripts = folder / "lua"
    scripts.mkdir(exist_ok=True)
    body = json.dumps({"name": "bench item", "description": "made by make bench", "price": 9.5})
    # wrk uses the ids from the start of the range, Locust those from the middle: both miss.
    half = ids[0] + len(ids) // 2
    print(f"stack: {options.replicas} replicas, {len(ids):,} items seeded", flush=True)
    return {
        "cached": Request(f"/items/{ids[0]}"),
        "uncached": Request(
            "/items/", fresh_ids=(half, ids[-1]), script=fresh_ids_script(scripts, ids[0], half - 1)
        ),
        "page": Request("/items"),
        "create": Request(
            "/items",
            method="POST",
            body=body,
            token=token,
            script=post_script(scripts, token, body),
        ),
    }


def metrics_pairs(
    stack: Stack, path: str, options: Options, deadline: Deadline
) -> list[dict[str, Any]]:
    """The cached GET with METRICS_ENABLED on one replica and off on the other, at the same
    time, then swapped.

    Measured one after the other (a restart in between), the two sides differed by ±15% from
    run to run on a shared machine, more than the few percent to be measured. Side by side,
    both replicas see the same machine at the same moment, and swapping them cancels any
    difference between the replicas themselves. Each replica gets its own wrk with the same
    connections, straight to its port: through nginx, least_conn sends more requests to the
    replica that is a little faster, more requests per loop turn make each one cheaper, and
    that feedback turned a few percent into fifteen.
    """
    runs = []
    replicas = len(stack.topology.api_ports)
    connections = max(options.connections // replicas, 1)
    for run in range(2):
        deadline.check(options.duration + options.warmup + 90, "metrics on/off")
        off = replicas - 1 - run % replicas  # the last replica first, then the one before
        stack.set_metrics([index != off for index in range(replicas)])
        urls = [f"http://{HOST}:{port}{path}" for port in stack.topology.api_ports]
        with ThreadPoolExecutor(replicas) as pool:
            list(pool.map(lambda url: wrk(url, options.warmup, connections), urls))
            groups = [Group(f"api-{i}", [pid]) for i, pid in enumerate(stack.api_pids(), 1)]
            meter = CpuMeter(groups)
            meter.start()
            results = list(pool.map(lambda url: wrk(url, options.duration, connections), urls))
            used = meter.stop()
        served = [result.requests for result in results]
        cpu_us = [used[f"api-{i + 1}"] / max(served[i], 1) * 1e6 for i in range(replicas)]
        enabled = [i != off for i in range(replicas)]
        runs.append({"served": served, "cpu_us": cpu_us, "metrics_on": enabled,
                     "rps": sum(result.rps for result in results)})  # fmt: skip
        print(
            "  metrics      "
            + "  ".join(
                f"api-{i + 1} {'on ' if i != off else 'off'} {cpu_us[i]:6.1f} µs/req"
                for i in range(replicas)
            ),
            flush=True,
        )
    stack.set_metrics([True] * replicas)
    return runs


def ratio_pair(
    url: str,
    request: Request,
    stack: Stack,
    hello: HelloReference,
    options: Options,
    before_run: Any = None,
) -> float:
    """One more (path ÷ hello) CPU ratio: the hello, then the path, back to back."""
    hello_us = hello.measure(options.duration, options.connections)
    if before_run is not None:
        before_run()
    meter = CpuMeter(stack.groups()[:1])
    meter.start()
    result = wrk(url, options.duration, options.connections, request.script)
    ratio = meter.stop()["api"] / max(result.requests, 1) * 1e6 / hello_us
    print(f"  {'':<12} another pair: {ratio:.2f} × hello", flush=True)
    return ratio


def shared_saturation(
    stack: Stack, name: str, request: Request, row: Row, options: Options, folder: Path
) -> dict[str, Any]:
    """The fixed-rate latency at 70% of what the stack sustains while Locust shares its cores.

    wrk finds the saturation with a generator that costs a few µs of CPU per request; the
    fixed-rate Locust costs over 100, taken from the same 2 cores, so 70% of wrk's rate leaves
    the machine saturated and measures the generator as much as the stack. Here Locust first
    asks for half again wrk's rate: what it achieves is the capacity of this machine with
    Locust on it. Then it runs at 70% of that.
    """
    found: dict[str, Any] = {}
    for step in ("capacity_run", "run"):
        if name == "uncached":
            stack.flush_cache()  # every Locust run walks the same fresh ids from the start
        rate = row.wrk.rps * 1.5 if step == "capacity_run" else found["capacity"] * 0.7
        found[step] = fixed_rate(
            stack.url, request, rate, options.fixed_seconds,
            folder / f"shared-{name}-{step}.json", stack.groups(),
        )  # fmt: skip
        found.setdefault("capacity", found[step]["achieved_rate"])
    return found


def run_stack(
    options: Options, folder: Path, deadline: Deadline, hello: HelloReference
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    wanted = [n for n in (*STACK_PATHS, *METRICS_PAIR) if options.wants(n)]
    if not wanted:
        return rows, extra
    deadline.check(120, "starting the stack")
    started = time.monotonic()
    with native_stack(folder / "stack-data", options.replicas) as stack:
        extra["stack_start_seconds"] = round(time.monotonic() - started, 1)
        requests = seed(stack, folder, options)

        def path_row(name: str, request: Request) -> Row:
            deadline.check(options.duration + options.warmup + options.fixed_seconds + 30, name)
            url = stack.url + request.wrk_path
            flush = stack.flush_cache if name == "uncached" else None
            if name == "cached":
                urllib.request.urlopen(stack.url + request.path, timeout=5).close()
            reference = hello.measure(options.duration, options.connections)
            lookups_before = stack.cache_lookups()
            result, used = measure(
                name, url, stack.groups(), "api", options, script=request.script, before_run=flush
            )
            lookups = stack.cache_lookups()
            row = Row(name, LABELS[name], "api", result, used, hello_us=reference)
            if request.path.startswith("/items/"):
                row.cache = {k: lookups.get(k, 0) - lookups_before.get(k, 0) for k in lookups}
            if name in RATIO_TARGETS:
                for _ in range(RATIO_PAIRS - 1):
                    row.more_ratios.append(
                        ratio_pair(url, request, stack, hello, options, before_run=flush)
                    )
            return row

        for name in STACK_PATHS:
            if not options.wants(name):
                continue
            row = path_row(name, requests[name])
            if name == "uncached":
                stack.flush_cache()
            row.fixed = fixed_rate(
                stack.url,
                requests[name],
                row.wrk.rps * options.fixed_fraction,
                options.fixed_seconds,
                folder / f"fixed-{name}.json",
                stack.groups(),
            )
            fixed, latency = row.fixed, row.fixed["latency_ms"]
            print(
                f"  {'':<12} fixed {fixed['achieved_rate']:>7,.0f} of {fixed['target_rate']:,.0f}"
                f" req/s  p50 {latency['p50']:6.2f} ms  p99 {latency['p99']:7.2f} ms"
                f"  (locust {fixed['generator_cpu_share']:.0%} of a core, machine "
                f"{fixed['machine_busy_share']:.0%} busy, api "
                f"{fixed['cpu_us_per_request'].get('api', math.nan):.0f} µs/req)",
                flush=True,
            )
            rows.append(row)
            if name in SHARED_PATHS:
                shared = shared_saturation(stack, name, requests[name], row, options, folder)
                extra.setdefault("shared_saturation", {})[name] = shared
                run = shared["run"]
                print(
                    f"  {'':<12} shared {run['achieved_rate']:>6,.0f} of {run['target_rate']:,.0f}"
                    f" req/s  p99 {run['latency_ms']['p99']:7.2f} ms (70% of the "
                    f"{shared['capacity']:,.0f} req/s sustained beside Locust)",
                    flush=True,
                )

        extra["rss_mb"] = {
            f"api-{i}": round(rss_bytes(pid) / MB, 1) for i, pid in enumerate(stack.api_pids(), 1)
        }
        print(f"  RSS per replica: {extra['rss_mb']}", flush=True)

        if options.wants("metrics_off") or options.wants("metrics_on"):
            urllib.request.urlopen(stack.url + requests["cached"].path, timeout=5).close()
            extra["metrics"] = metrics_pairs(stack, requests["cached"].path, options, deadline)

        if options.profile:
            extra["profiles"] = profile_paths(stack, requests, options, folder, deadline)
    return rows, extra


def profile_paths(
    stack: Stack, requests: dict[str, Request], options: Options, folder: Path, deadline: Deadline
) -> dict[str, Any]:
    """py-spy on replica 1 while wrk drives each path: where the API's CPU goes."""
    found: dict[str, Any] = {}
    pid = stack.api_pids()[0]
    for name in STACK_PATHS:
        if not options.wants(name):
            continue
        deadline.check(options.duration + 30, f"profiling {name}")
        request = requests[name]
        if name == "uncached":
            stack.flush_cache()
        url = stack.url + request.wrk_path
        raw = RESULTS_DIR / f"profile-{name}.txt"
        spy = subprocess.Popen(
            [str(Path(PYTHON).with_name("py-spy")), "record", "--pid", str(pid),
             "--duration", str(options.duration), "--rate", "200", "--nonblocking",
             "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1)  # py-spy attaches before the load starts
        wrk(url, options.duration, options.connections, request.script)
        _, err = spy.communicate(timeout=60)
        if not raw.exists():
            found[name] = {"error": err[-500:]}
            continue
        found[name] = profile_summary(raw.read_text())
        print(f"  profiled {name}: {raw.relative_to(REPO_ROOT)}", flush=True)
    return found


# --- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
    }


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def targets(
    rows: dict[str, Row], extra: dict[str, Any], all_rows: list[Row]
) -> list[dict[str, Any]]:
    found = []

    def add(name: str, limit: float, value: float, unit: str) -> None:
        found.append({"target": name, "limit": limit, "value": value, "unit": unit,
                      "met": bool(value <= limit) if not math.isnan(value) else None})  # fmt: skip

    if "cached" in rows:
        add("cached GET CPU/request ÷ hello", 2.0, rows["cached"].ratio, "×")
    if runs := extra.get("metrics"):
        pairs = [
            (us, on)
            for run in runs
            for us, on in zip(run["cpu_us"], run["metrics_on"], strict=True)
        ]
        on = [us for us, enabled in pairs if enabled]
        off = [us for us, enabled in pairs if not enabled]
        overhead = (sum(on) / len(on)) / (sum(off) / len(off)) - 1
        add("metrics overhead on cached GET (CPU/request)", 10.0, overhead * 100, "%")
    if "uncached" in rows:
        add("uncached GET CPU/request ÷ hello", 4.0, rows["uncached"].ratio, "×")
    for name in STACK_PATHS:
        row = rows.get(name)
        if row is not None and row.fixed is not None:
            p99 = row.fixed["latency_ms"]["p99"]
            # A generator that fell behind its schedule measured a lower rate than asked for.
            sustained = row.fixed["achieved_rate"] >= 0.9 * row.fixed["target_rate"]
            label = f"p99 at 70% of saturation, {row.label}"
            if not sustained or math.isnan(p99):
                label, p99 = f"{label} (rate not sustained)", math.inf
            add(label, 25.0, p99, "ms")
    for name, shared in extra.get("shared_saturation", {}).items():
        run = shared["run"]
        label = f"p99 at 70% of the capacity beside Locust, {LABELS[name]}"
        p99 = run["latency_ms"]["p99"]
        if run["achieved_rate"] < 0.9 * run["target_rate"] or math.isnan(p99):
            label, p99 = f"{label} (rate not sustained)", math.inf
        add(label, 25.0, p99, "ms")
    for replica, rss in extra.get("rss_mb", {}).items():
        add(f"RSS of {replica} after the run", 90.0, rss, "MB")
    return found


def _ratio_cell(row: Row) -> str:
    if row.name == "nginx":
        return "—"
    if not row.more_ratios:
        return _fmt(row.ratio, 2)
    return f"{row.ratio:.2f} ({min(row.ratios):.2f}–{max(row.ratios):.2f})"


def markdown(report: dict[str, Any], rows: list[Row]) -> str:
    m = report["machine"]
    samples = report["extra"].get("hello_us_samples") or [math.nan]
    o = report["options"]
    lines = [
        f"`make bench` on {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Linux "
        f"{m['kernel']}, Python {m['python']}, {report['finished']}; load average before "
        f"{report['load_before']}, after {report['load_after']}.",
        "",
        f"wrk -t1 -c{o['connections']}, {o['duration']} s per row after a {o['warmup']} s warm-up. "
        f"Stack rows go through nginx to {o['replicas']} API replicas. Fixed rate: Locust at "
        f"{o['fixed_fraction']:.0%} of the row's wrk throughput for {o['fixed_seconds']} s, "
        "latency timed from each request's scheduled send (no coordinated omission). CPU µs/req: "
        "CPU time of all API replica processes (ceilings: the one server process) ÷ requests; "
        "× hello: that ÷ the CPU per request of a FastAPI hello measured just before the row "
        f"(it ranged {min(samples):.0f}–{max(samples):.0f} µs over the run); rows with a CPU "
        f"target: the median of {RATIO_PAIRS} such pairs of runs, their range in brackets.",
        "",
        "| Path | req/s | p50 ms | p99 ms | API CPU µs/req | × hello | nginx µs/req "
        "| fixed rate req/s | p50 ms | p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        api = row.cpu_us() if row.name != "nginx" else math.nan
        nginx = row.cpu_us("nginx") if row.name != "nginx" else row.cpu_us()
        fixed = row.fixed or {}
        latency = fixed.get("latency_ms", {})
        lines.append(
            f"| {row.label} | {_fmt(row.wrk.rps)} | {_fmt(row.wrk.p50_ms, 2)} | "
            f"{_fmt(row.wrk.p99_ms, 2)} | {_fmt(api, 1)} | {_ratio_cell(row)} | "
            f"{_fmt(nginx, 1)} | {_fmt(fixed.get('achieved_rate', math.nan))} | "
            f"{_fmt(latency.get('p50', math.nan), 2)} | {_fmt(latency.get('p99', math.nan), 2)} |"
        )
    stack_rows = [row for row in rows if row.primary == "api"]
    if stack_rows:
        lines += [
            "",
            "Other processes of the stack rows, CPU µs per request (supervisord copies every log "
            "line of nginx and the replicas to its files):",
            "",
            "| Path | PostgreSQL | Redis | supervisord | cache hits / misses | errors "
            "| load (1 min) | during the fixed-rate run |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in stack_rows:
            cache = row.cache or {}
            hits = f"{cache.get('hit', 0):,.0f} / {cache.get('miss', 0):,.0f}" if cache else "—"
            others = " | ".join(
                _fmt(row.cpu_us(group), 1) for group in ("postgres", "redis", "supervisord")
            )
            generator = (
                f"{row.fixed['generator_cpu_share']:.0%} of a core, "
                f"{row.fixed['late_starts']} late sends; machine "
                f"{row.fixed['machine_busy_share']:.0%} busy, API "
                f"{row.fixed['cpu_us_per_request'].get('api', math.nan):.0f} µs/req"
                if row.fixed
                else "—"
            )
            lines.append(
                f"| {row.label} | {others} | {hits} | {row.wrk.errors} | {row.load} | {generator} |"
            )
    if runs := report["extra"].get("metrics"):
        lines += [
            "",
            "Instrumentation: the cached GET with METRICS_ENABLED=false on one replica and true "
            "on the other, at the same time, each driven by its own wrk, then swapped:",
            "",
            "| Run | Replica | METRICS_ENABLED | Requests served | API CPU µs/req |",
            "|---|---|---|--:|--:|",
        ]
        for number, run in enumerate(runs, start=1):
            for index, (us, served) in enumerate(zip(run["cpu_us"], run["served"], strict=True)):
                enabled = "true" if run["metrics_on"][index] else "false"
                lines.append(
                    f"| {number} | api-{index + 1} | {enabled} | {served:,.0f} | {us:.1f} |"
                )
    if shared := report["extra"].get("shared_saturation"):
        lines += [
            "",
            "Fixed rate against the capacity left beside the generator: Locust asked for 1.5× the "
            "wrk rate sustains the capacity below (its own CPU is taken from the same cores), "
            "then runs at 70% of that:",
            "",
            "| Path | capacity beside Locust req/s | fixed rate req/s | p50 ms | p99 ms "
            "| machine busy | Locust CPU | API µs/req |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for name, found in shared.items():
            run = found["run"]
            lines.append(
                f"| {LABELS[name]} | {_fmt(found['capacity'])} | {_fmt(run['achieved_rate'])} | "
                f"{_fmt(run['latency_ms']['p50'], 2)} | {_fmt(run['latency_ms']['p99'], 2)} | "
                f"{run['machine_busy_share']:.0%} | {run['generator_cpu_share']:.0%} of a core | "
                f"{_fmt(run['cpu_us_per_request'].get('api', math.nan), 0)} |"
            )
    if report["extra"].get("rss_mb"):
        rss = ", ".join(f"{k} {v} MB" for k, v in report["extra"]["rss_mb"].items())
        lines += ["", f"RSS per API replica after the run: {rss}."]
    if report["targets"]:
        lines += ["", "| Target | Limit | Measured | Met |", "|---|--:|--:|:-:|"]
        for t in report["targets"]:
            met = {True: "yes", False: "**no**", None: "—"}[t["met"]]
            limit, value = f"{t['limit']:g} {t['unit']}", f"{t['value']:.2f} {t['unit']}"
            lines.append(f"| {t['target']} | ≤ {limit} | {value} | {met} |")
    for name, summary in report["extra"].get("profiles", {}).items():
        lines += ["", f"py-spy, replica 1, {LABELS[name]} (share of samples):", ""]
        lines += [f"    {line}" for line in summary.get("text", "").splitlines()]
    return "\n".join(lines) + "\n"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise BenchError(
            f"missing {', '.join(missing)}: run `apt-get install -y {' '.join(missing)}` "
            "(or `make bench`, which installs them as root)"
        )


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", "10")))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--fixed-seconds", type=int, default=15)
    parser.add_argument("--fixed-fraction", type=float, default=0.7)
    parser.add_argument(
        "--replicas",
        type=int,
        default=int(os.environ.get("BENCH_REPLICAS", str(os.cpu_count() or 2))),
    )
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--budget", type=int, default=int(os.environ.get("BENCH_BUDGET", "900")))
    parser.add_argument("--profile", action="store_true", default=bool(os.environ.get("PROFILE")))
    parser.add_argument("--only", default="", help="comma-separated rows: " + ",".join(LABELS))
    args = parser.parse_args(argv)
    only = frozenset(filter(None, args.only.split(",")))
    if unknown := only - set(LABELS):
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    return Options(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        fixed_seconds=args.fixed_seconds,
        fixed_fraction=args.fixed_fraction,
        replicas=args.replicas,
        items=args.items,
        budget=args.budget,
        profile=args.profile,
        only=only,
    )


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Unwinds through every `finally`, so the stack and the ceiling servers are taken down.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    deadline = Deadline(options.budget)
    try:
        check_tools()
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "options": {k: v for k, v in asdict(options).items() if k != "only"},
            "load_before": load_average(),
        }
        print(f"make bench: load average {report['load_before']}", flush=True)
        with (
            tempfile.TemporaryDirectory(prefix="bench-") as tmp,
            ceiling_app("bench.apps.hello:app", "/hello") as (hello_url, hello_pid),
        ):
            folder = Path(tmp)
            hello = HelloReference(hello_url, hello_pid)
            rows = run_ceilings(options, folder, deadline, hello)
            stack_rows, extra = run_stack(options, folder, deadline, hello)
            rows += stack_rows
            extra["hello_us_samples"] = [round(v, 1) for v in hello.samples]
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["load_after"] = load_average()
    report["extra"] = extra
    by_name = {row.name: row for row in rows}
    report["targets"] = targets(by_name, extra, rows)
    report["rows"] = [
        {
            **asdict(row),
            "cpu_us_per_request": {group: row.cpu_us(group) for group in row.cpu_seconds},
            "cpu_ratio_to_hello": row.ratio,
        }
        for row in rows
    ]
    text = markdown(report, rows)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for suffix, content in (
        ("json", json.dumps(report, indent=2, default=str)),
        ("md", text),
    ):
        (RESULTS_DIR / f"bench-{stamp}.{suffix}").write_text(content)
        (RESULTS_DIR / f"latest.{suffix}").write_text(content)
    print("\n" + text)
    print(f"written: bench/results/bench-{stamp}.json and .md (and latest.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
