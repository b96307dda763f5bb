"""Locust's processes for one run: a master and N local workers (or one process with WORKERS=0).

Natively the workers are local processes, one per core being the useful maximum: a worker is one
gevent loop, so one core. Under Compose the workers are the locust-worker containers and only the
master runs here (external_workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from loadtest.model import Window
from loadtest.settings import LOCUSTFILE, Settings
from stack.monitoring_auth import SETTING
from stack.paths import REPO_ROOT
from stack.procs import free_port

STARTUP_ALLOWANCE_SECONDS = 120  # workers connecting, spawning, the last requests draining


class LocustError(RuntimeError):
    pass


def locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]


def _tee(stream: IO[str], log: Path, echo: Callable[[str], None] | None) -> None:
    with log.open("a") as file:
        for line in stream:
            file.write(line)
            file.flush()
            if echo is not None:
                echo(line.rstrip())


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _spawn(
    command: list[str],
    log: Path,
    echo: Callable[[str], None] | None,
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[str], threading.Thread]:
    process = subprocess.Popen(  # noqa: S603 - our interpreter running Locust with our flags
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    reader = threading.Thread(target=_tee, args=(process.stdout, log, echo), daemon=True)
    reader.start()
    return process, reader


def _master_env(settings: Settings) -> dict[str, str]:
    """The master pushes to the Pushgateway, so it gets the monitoring credential: in its
    environment, which other local users cannot read, unlike a command line."""
    env = dict(os.environ)
    if settings.monitoring_auth:
        env[SETTING] = settings.monitoring_auth.password
    return env


def _topology_args(settings: Settings, port: int) -> list[str]:
    if settings.workers == 0 and not settings.external_workers:
        return []
    bind = "0.0.0.0" if settings.external_workers else "127.0.0.1"  # noqa: S104 - Compose network
    return [
        "--master",
        f"--master-bind-host={bind}",
        f"--master-bind-port={port}",
        f"--expect-workers={max(settings.workers, 1)}",
        "--expect-workers-max-wait=120",
    ]


def _start_workers(
    settings: Settings, port: int, folder: Path, started: list[subprocess.Popen[str]]
) -> None:
    if settings.external_workers:
        return
    for index in range(settings.workers):
        command = locust("--worker", "--master-host=127.0.0.1", f"--master-port={port}")
        started.append(_spawn(command, folder / f"locust-worker-{index + 1}.log", None)[0])


def common_args(settings: Settings, seed_file: Path, run_id: str) -> list[str]:
    return [
        f"--host={settings.host}",
        f"--seed-file={seed_file}",
        f"--run-id={run_id}",
        f"--pushgateway-url={settings.pushgateway_url}",
        *settings.locust_options(),
    ]


def run_headless(
    settings: Settings, folder: Path, seed_file: Path, run_id: str, echo: Callable[[str], None]
) -> tuple[Window, dict[int, int]]:
    """Run the test to its end; return its window and what the users offered per second (both
    written by the master)."""
    port = settings.master_bind_port or free_port()
    window_file = folder / "window.json"
    command = locust(
        *_topology_args(settings, port),
        *common_args(settings, seed_file, run_id),
        "--headless",
        f"--users={settings.users}",
        f"--spawn-rate={settings.spawn_rate}",
        # Not --run-time, which loses the workers' last numbers (locustfile.py).
        f"--stop-after={settings.duration_s}",
        f"--csv={folder / 'locust'}",
        # Without it the history's percentiles are cumulative since the start; with it they
        # cover Locust's last 10 s, so the latency chart shows when things got slow.
        "--csv-full-history",
        f"--html={folder / 'locust.html'}",
        f"--json-file={folder / 'locust'}",
        f"--window-file={window_file}",
        "--exit-code-on-error=0",  # the gate decides, from both sides' numbers
        "--only-summary",
        "--stop-timeout=5",
    )
    with _processes() as started:
        master, reader = _spawn(command, folder / "locust-master.log", echo, _master_env(settings))
        started.append(master)
        _start_workers(settings, port, folder, started)
        try:
            code = master.wait(timeout=settings.duration_s + STARTUP_ALLOWANCE_SECONDS)
        except subprocess.TimeoutExpired:
            raise LocustError(
                f"Locust did not finish; see {folder / 'locust-master.log'}"
            ) from None
        reader.join(timeout=10)
    if code != 0 or not window_file.exists():
        raise LocustError(f"Locust exited with {code}; see {folder / 'locust-master.log'}")
    times = json.loads(window_file.read_text())
    if "start" not in times:
        raise LocustError(f"the test never started; see {folder / 'locust-master.log'}")
    window = Window(times["start"], times.get("end", time.time()), times.get("spawned"))
    return window, {int(second): count for second, count in times.get("offered", {}).items()}


def run_ui(settings: Settings, folder: Path, seed_file: Path, run_id: str) -> int:
    """Locust's web UI until Ctrl-C; tests are started and stopped from the browser."""
    port = settings.master_bind_port or free_port()
    command = locust(
        *_topology_args(settings, port),
        *common_args(settings, seed_file, run_id),
        f"--users={settings.users}",
        f"--spawn-rate={settings.spawn_rate}",
        f"--run-time={settings.duration}",
        f"--web-host={settings.web_host}",
        f"--web-port={settings.web_port}",
    )
    with _processes() as started:
        master, _ = _spawn(command, folder / "locust-master.log", print, _master_env(settings))
        started.append(master)
        _start_workers(settings, port, folder, started)
        try:
            return master.wait()
        except KeyboardInterrupt:
            return 0
