"""The native stack, started by the tests on free loopback ports in a throwaway data folder."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from native.paths import REPO_ROOT
from native.servers import free_port
from native.topology import API_BASE_PORT, PORTS, Topology

REPLICAS = 3


def _free_block(size: int) -> int:
    """A base port whose next `size` ports are all free (the replicas' ports)."""
    for _ in range(50):
        base = free_port()
        if base + size > 65535:
            continue
        try:
            for offset in range(1, size + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


@dataclass
class NativeStack:
    topology: Topology
    data_dir: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "native.stack", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def supervisorctl(self, *args: str) -> str:
        conf = self.data_dir / "stack" / "run" / "supervisord.conf"
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return result.stdout

    def log(self, program: str) -> str:
        return (self.data_dir / "stack" / "logs" / f"{program}.log").read_text(errors="replace")

    @property
    def nginx(self) -> str:
        return self.topology.url("nginx")

    @property
    def prometheus(self) -> str:
        return self.topology.url("prometheus")

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.prometheus}/api/v1/query", params={"query": promql}, timeout=10
        )
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def wait_for(self, promql: str, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql} never satisfied the check; last result: {result}")


@pytest.fixture(scope="session")
def native_stack() -> Iterator[NativeStack]:
    with tempfile.TemporaryDirectory(prefix="native-stack-") as tmp:
        data_dir = Path(tmp)
        os.chmod(data_dir, 0o755)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("NATIVE_", "API_", "DATABASE_", "REDIS_", "POSTGRES_"))
        }
        env |= {var: str(free_port()) for var, _ in PORTS.values()}
        env |= {
            API_BASE_PORT[0]: str(_free_block(REPLICAS)),
            "API_REPLICAS": str(REPLICAS),
            "STACK_DATA_DIR": str(data_dir),
            "STACK_ENV_FILE": str(data_dir / ".env"),
            # Fast scrapes so the checks see series within seconds.
            "NATIVE_SCRAPE_INTERVAL": "1s",
            # All test traffic comes from 127.0.0.1; the rate-limit test runs its own nginx.
            "NGINX_RATE_LIMIT": "100000r/s",
            "SHUTDOWN_GRACE_SECONDS": "5",
        }
        stack = NativeStack(Topology.from_env(env), data_dir, env)
        started = stack.run("up")
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            yield stack
        finally:
            stack.run("down")
