"""`python -m loadtest run` refuses, before any load, the runs it could not judge honestly: one
nginx would rate-limit, one the machine cannot drive, one against a HOST Prometheus does not
watch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.settings import read_env_file
from stack.config.supervisor import api_environment
from stack.ephemeral import EphemeralStack
from stack.paths import API_DIR
from stack.procs import free_port, wait_for_port
from stack.testing.loadtest_runs import loadtest

pytestmark = pytest.mark.native_only(
    reason="it drives python -m loadtest from this machine, each user from its own loopback "
    "address; under Compose `make loadtest` runs Locust as containers (test_compose_replicas.py)"
)


def test_a_run_nginx_would_rate_limit_is_refused_up_front(
    live_stack: EphemeralStack, tmp_path: Path
) -> None:
    """All users on one address at more than nginx allows it: refused before any load."""
    run = loadtest(
        live_stack,
        tmp_path / "reports",
        "run",
        "--spread-sources=off",
        "--users=100",
        "--user-rps=1000",
    )
    assert run.returncode == 2, run.output
    assert "nginx rate limit: 100000 req/s per address" in run.output
    assert "would answer 429" in run.output
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


@pytest.mark.parametrize(
    ("knobs", "refusal"),
    [
        # More than two Locust processes can send.
        (("--users=5000", "--spawn-rate=1000"), "Lower USERS or LOADTEST_USER_RPS"),
        # A ramp-up that leaves no time at the full rate to judge the throughput over.
        (("--users=50", "--spawn-rate=1", "--duration=30s"), "Raise SPAWN_RATE or DURATION"),
    ],
)
def test_a_load_the_machine_cannot_drive_is_refused_up_front(
    live_stack: EphemeralStack, tmp_path: Path, knobs: tuple[str, ...], refusal: str
) -> None:
    run = loadtest(live_stack, tmp_path / "reports", "run", *knobs)
    assert run.returncode == 2, run.output
    assert refusal in run.output
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_a_host_prometheus_does_not_watch_is_refused(
    live_stack: EphemeralStack, tmp_path: Path
) -> None:
    """HOST another API (a real replica Prometheus does not scrape): the server's side would be
    judged on other traffic, so the run refuses before seeding."""
    stack = live_stack
    env = {**stack.env, **read_env_file(stack.data_dir / ".env")}
    port = free_port()
    settings = {**api_environment(stack.topology, env, 1), "API_PORT": str(port)}
    stray = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=API_DIR,
        env={"PATH": os.environ["PATH"], **settings, "REPLICA_NAME": "stray"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60)
        run = loadtest(stack, tmp_path / "reports", "run", f"--host=http://127.0.0.1:{port}")
    finally:
        stray.terminate()
        stray.wait(timeout=30)
    assert run.returncode == 2, run.output
    assert "HOST is not the stack this Prometheus watches" in run.output
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())
