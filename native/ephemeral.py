"""A throwaway native stack on free loopback ports in a folder of its own.

The end-to-end tests, the chaos suite and the benchmarks each start one, so they never touch the
stack a user brought up with `make up` (default ports, the checkout's .env and data).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx

from native.paths import REPO_ROOT
from native.servers import ServerError, free_port
from native.topology import API_BASE_PORT, HOST, PORTS, Topology

# Settings of the caller's own environment that would steer the stack elsewhere.
_FOREIGN = ("NATIVE_", "API_", "DATABASE_", "REDIS_", "POSTGRES_", "METRICS_")


def free_block(size: int) -> int:
    """A base port whose next `size` ports are all free (replica i listens on base + i)."""
    for _ in range(50):
        base = free_port()
        if base + size > 65535:
            continue
        try:
            for offset in range(1, size + 1):
                with socket.socket() as probe:
                    probe.bind((HOST, base + offset))
        except OSError:
            continue
        return base
    raise ServerError("no block of free ports")


def ephemeral_env(data_dir: Path, replicas: int, **settings: str) -> dict[str, str]:
    """The environment for `python -m native.stack` to run a stack of its own in data_dir."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_FOREIGN)}
    env |= {var: str(free_port()) for var, _ in PORTS.values()}
    env |= {
        API_BASE_PORT[0]: str(free_block(replicas)),
        "API_REPLICAS": str(replicas),
        "STACK_DATA_DIR": str(data_dir),
        "STACK_ENV_FILE": str(data_dir / ".env"),
        **settings,
    }
    return env


@dataclass
class EphemeralStack:
    topology: Topology
    data_dir: Path
    env: dict[str, str]

    @classmethod
    def prepare(cls, data_dir: Path, replicas: int, **settings: str) -> Self:
        # As root PostgreSQL runs as its own user, which must reach its data folder.
        data_dir.chmod(0o755)
        env = ephemeral_env(data_dir, replicas, **settings)
        return cls(Topology.from_env(env), data_dir, env)

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
