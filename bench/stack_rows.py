"""The stack's rows: each path through nginx at saturation and at a fixed rate, the fixed rate
again beside Locust's own CPU, the instrumentation pairs and (with --profile) py-spy."""

# ruff: noqa: S603, S310 - local binaries, loopback URLs
from __future__ import annotations

import math
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.config import (
    LABELS,
    METRICS_PAIR,
    PYTHON,
    RATIO_PAIRS,
    RATIO_TARGETS,
    RESULTS_DIR,
    SHARED_PATHS,
    STACK_PATHS,
    TLS,
    Deadline,
    Options,
)
from bench.locust_driver import Request, fixed_rate
from bench.measure import HelloReference, Row, measure, ratio_pair
from bench.native_stack import BenchStack, native_stack
from bench.procs import CpuMeter, Group, per_request_us, rss_bytes
from bench.profile import profile_summary
from bench.seed import seed
from bench.tls_rows import tls_pairs
from bench.wrk import wrk
from stack.paths import REPO_ROOT

MB = 1024 * 1024


def path_row(
    stack: BenchStack,
    name: str,
    request: Request,
    hello: HelloReference,
    options: Options,
    deadline: Deadline,
) -> Row:
    """A path at saturation: against a hello measured just before, then RATIO_PAIRS-1 more
    (hello, path) pairs for the rows with a CPU-ratio target."""
    deadline.check(options.duration + options.warmup + options.fixed_seconds + 30, name)
    url = stack.nginx + request.wrk_path
    flush = stack.flush_cache if name == "uncached" else None
    if name == "cached":
        urllib.request.urlopen(stack.nginx + request.path, timeout=5).close()
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
            api = stack.groups()[0]
            row.more_ratios.append(
                ratio_pair(url, request.script, api, hello, options, before_run=flush)
            )
    return row


def fixed_rate_run(
    stack: BenchStack, name: str, request: Request, row: Row, options: Options, folder: Path
) -> dict[str, Any]:
    """Locust at options.fixed_fraction of the rate wrk reached on the row."""
    if name == "uncached":
        stack.flush_cache()
    fixed = fixed_rate(
        stack.nginx,
        request,
        row.wrk.rps * options.fixed_fraction,
        options.fixed_seconds,
        folder / f"fixed-{name}.json",
        stack.groups(),
    )
    latency = fixed["latency_ms"]
    print(
        f"  {'':<12} fixed {fixed['achieved_rate']:>7,.0f} of {fixed['target_rate']:,.0f}"
        f" req/s  p50 {latency['p50']:6.2f} ms  p99 {latency['p99']:7.2f} ms"
        f"  (locust {fixed['generator_cpu_share']:.0%} of a core, machine "
        f"{fixed['machine_busy_share']:.0%} busy, api "
        f"{fixed['cpu_us_per_request'].get('api', math.nan):.0f} µs/req)",
        flush=True,
    )
    return fixed


def shared_saturation(
    stack: BenchStack, name: str, request: Request, row: Row, options: Options, folder: Path
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
            stack.nginx, request, rate, options.fixed_seconds,
            folder / f"shared-{name}-{step}.json", stack.groups(),
        )  # fmt: skip
        found.setdefault("capacity", found[step]["achieved_rate"])
    run = found["run"]
    print(
        f"  {'':<12} shared {run['achieved_rate']:>6,.0f} of {run['target_rate']:,.0f}"
        f" req/s  p99 {run['latency_ms']['p99']:7.2f} ms (70% of the "
        f"{found['capacity']:,.0f} req/s sustained beside Locust)",
        flush=True,
    )
    return found


def metrics_pairs(
    stack: BenchStack, path: str, options: Options, deadline: Deadline
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
    replicas = stack.topology.replicas
    connections = max(options.connections // replicas, 1)
    urls = [f"{stack.replica_url(replica)}{path}" for replica in range(1, replicas + 1)]
    for run in range(2):
        deadline.check(options.duration + options.warmup + 90, "metrics on/off")
        off = replicas - 1 - run % replicas  # the last replica first, then the one before
        enabled = [i != off for i in range(replicas)]
        stack.set_metrics(enabled)
        with ThreadPoolExecutor(replicas) as pool:
            list(pool.map(lambda url: wrk(url, options.warmup, connections), urls))
            groups = [Group(f"api-{i}", [pid]) for i, pid in enumerate(stack.api_pids(), 1)]
            meter = CpuMeter(groups)
            meter.start()
            results = list(pool.map(lambda url: wrk(url, options.duration, connections), urls))
            used = meter.stop()
        served = [result.requests for result in results]
        cpu_us = [per_request_us(used[f"api-{i + 1}"], served[i]) for i in range(replicas)]
        runs.append({"served": served, "cpu_us": cpu_us, "metrics_on": enabled,
                     "rps": sum(result.rps for result in results)})  # fmt: skip
        print(
            "  metrics      "
            + "  ".join(
                f"api-{i + 1} {'on ' if on else 'off'} {cpu_us[i]:6.1f} µs/req"
                for i, on in enumerate(enabled)
            ),
            flush=True,
        )
    stack.set_metrics([True] * replicas)
    return runs


def profile_paths(
    stack: BenchStack,
    requests: dict[str, Request],
    options: Options,
    deadline: Deadline,
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
        url = stack.nginx + request.wrk_path
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


def run_stack(
    options: Options, folder: Path, deadline: Deadline, hello: HelloReference
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    # TLS only when asked for (--only tls, make bench-tls): its six minutes would push the whole
    # of `make bench` past its budget.
    tls = TLS in options.only
    if not tls and not any(options.wants(n) for n in (*STACK_PATHS, *METRICS_PAIR)):
        return rows, extra
    deadline.check(120, "starting the stack")
    started = time.monotonic()
    with native_stack(folder / "stack-data", options.replicas) as stack:
        extra["stack_start_seconds"] = round(time.monotonic() - started, 1)
        requests = seed(stack, folder, options)

        for name in STACK_PATHS:
            if not options.wants(name):
                continue
            row = path_row(stack, name, requests[name], hello, options, deadline)
            row.fixed = fixed_rate_run(stack, name, requests[name], row, options, folder)
            rows.append(row)
            if name in SHARED_PATHS:
                shared = shared_saturation(stack, name, requests[name], row, options, folder)
                extra.setdefault("shared_saturation", {})[name] = shared

        extra["rss_mb"] = {
            f"api-{i}": round(rss_bytes(pid) / MB, 1) for i, pid in enumerate(stack.api_pids(), 1)
        }
        print(f"  RSS per replica: {extra['rss_mb']}", flush=True)

        if tls:
            urllib.request.urlopen(stack.nginx + requests["cached"].path, timeout=5).close()
            extra["tls"] = tls_pairs(stack, requests["cached"].path, options, deadline)

        if options.wants("metrics_off") or options.wants("metrics_on"):
            urllib.request.urlopen(stack.nginx + requests["cached"].path, timeout=5).close()
            extra["metrics"] = metrics_pairs(stack, requests["cached"].path, options, deadline)

        if options.profile:
            extra["profiles"] = profile_paths(stack, requests, options, deadline)
    return rows, extra
