"""The ceilings the stack is measured against, each served the way a replica is: nginx answering a
constant, a bare ASGI app and a FastAPI hello (one Uvicorn process, uvloop + httptools)."""

# ruff: noqa: S603, S607, S310 - local binaries, loopback URLs
from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.config import BENCH_DIR, CEILINGS, LABELS, PYTHON, BenchError, Deadline, Options
from bench.measure import HelloReference, Row, measure
from bench.procs import Group
from stack.paths import REPO_ROOT
from stack.procs import free_port, stop_process
from stack.topology import HOST


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
def ceiling_app(
    target: str, path: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "-m", "bench.apps.serve", target, HOST, str(port)],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
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


def run_ceilings(
    options: Options, folder: Path, deadline: Deadline, hello: HelloReference
) -> list[Row]:
    """The ceiling rows; `hello` is the server already running for the whole run."""
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
