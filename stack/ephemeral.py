"""A throwaway native stack on free loopback ports in a folder of its own.

The end-to-end tests, the chaos suite and the benchmarks each start one, so they never touch the
stack a user brought up with `make up` (default ports, the checkout's .env and data).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

from stack.monitoring import Monitoring
from stack.paths import REPO_ROOT
from stack.procs import free_block, free_ports, port_open
from stack.running import LiveStack
from stack.topology import API_BASE_PORT, PORTS, Topology

# Settings of the caller's own environment that would steer the stack elsewhere.
_FOREIGN = ("NATIVE_", "API_", "DATABASE_", "REDIS_", "POSTGRES_", "METRICS_", "MONITORING_")


def ephemeral_env(data_dir: Path, replicas: int, **settings: str) -> dict[str, str]:
    """The environment for `python -m stack.native` to run a stack of its own in data_dir."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_FOREIGN)}
    ports = free_ports(len(PORTS))
    env |= {var: str(port) for (var, _), port in zip(PORTS.values(), ports, strict=True)}
    env |= {
        API_BASE_PORT[0]: str(free_block(replicas, avoid=frozenset(ports))),
        "API_REPLICAS": str(replicas),
        "STACK_DATA_DIR": str(data_dir),
        "STACK_ENV_FILE": str(data_dir / ".env"),
        **settings,
    }
    return env


@dataclass
class EphemeralStack(LiveStack):
    topology: Topology
    data_dir: Path
    env: dict[str, str]
    runner = "native"

    @classmethod
    def prepare(cls, data_dir: Path, replicas: int, **settings: str) -> Self:
        # As root PostgreSQL runs as its own user, which must reach its data folder.
        data_dir.chmod(0o755)
        env = ephemeral_env(data_dir, replicas, **settings)
        return cls(Topology.from_env(env), data_dir, env)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stack.native", *args],
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

    def pid(self, program: str) -> int:
        """The pid supervisord has for a program ("api:api-2", "postgres"); 0 when not running."""
        return int(self.supervisorctl("pid", program).strip() or 0)

    # --- LiveStack ----------------------------------------------------------------------------

    @property
    def replicas(self) -> int:
        return self.topology.replicas

    @property
    def nginx(self) -> str:
        return self.topology.url("nginx")

    @property
    def nginx_port(self) -> int:
        return self.topology.ports["nginx"]

    @property
    def monitoring_plane(self) -> Monitoring:
        url = self.topology.url
        return Monitoring(
            url("prometheus"), url("alertmanager"), url("pushgateway"), self.monitoring_auth
        )

    @property
    def env_file(self) -> str:
        return str(self.data_dir / ".env")

    @property
    def https(self) -> str:
        return f"https://{self.topology.address('nginx-tls')}"

    def replica_url(self, replica: int) -> str:
        return f"http://{self.topology.api_addresses[replica - 1]}"

    def replica_urls(self) -> list[str]:
        return [f"http://{address}" for address in self.topology.api_addresses]

    def replica_addresses(self) -> list[str]:
        return self.topology.api_addresses

    def replica_ids(self) -> list[str]:
        return [str(self.pid(f"api:api-{r}")) for r in range(1, self.replicas + 1)]

    def stop_replica(self, replica: int) -> None:
        output = self.supervisorctl("stop", f"api:api-{replica}")
        assert "stopped" in output, output

    def start_replica(self, replica: int) -> None:
        output = self.supervisorctl("start", f"api:api-{replica}")
        assert "started" in output, output
        self.wait_until_replica_serves(replica)

    def stop_replicas(self) -> None:
        self.supervisorctl("stop", "api:*")

    def start_replicas(self) -> None:
        self.supervisorctl("start", "api:*")
        for replica in range(1, self.replicas + 1):
            self.wait_until_replica_serves(replica)

    def log(self, name: str) -> str:
        return (self.data_dir / "stack" / "logs" / f"{name}.log").read_text(errors="replace")

    def logs(self) -> dict[str, str]:
        folder = self.data_dir / "stack" / "logs"
        return {path.stem: path.read_text(errors="replace") for path in folder.glob("*.log")}

    def datastore(self, service: str) -> tuple[str, int]:
        return self.topology.host, self.topology.ports[service]

    def stop_service(self, service: str) -> None:
        output = self.supervisorctl("stop", service)
        assert "stopped" in output, output

    def start_service(self, service: str) -> None:
        output = self.supervisorctl("start", service)
        assert "started" in output, output

    def running(self) -> list[str]:
        return self.leftovers()

    def nginx_status(self) -> str:
        return httpx.get(f"{self.topology.url('nginx-internal')}/stub_status", timeout=10).text

    def nginx_http_conf(self) -> str:
        return (self.data_dir / "stack" / "run" / "nginx" / "conf.d" / "http.conf").read_text()

    def leftovers(self) -> list[str]:
        """Command lines of processes that still belong to this stack (none after `down`)."""
        found = []
        data_dir = str(self.data_dir)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if data_dir in cmdline or f"STACK_DATA_DIR={data_dir}".encode() in environ:
                found.append(cmdline)
        return found

    def listening_ports(self) -> list[int]:
        ports = [*self.topology.ports.values(), *self.topology.api_ports]
        return [port for port in ports if port_open(port)]


@contextmanager
def throwaway_stack(prefix: str, replicas: int, **settings: str) -> Iterator[EphemeralStack]:
    """Up on entry; on exit `make down` (the command a user runs), which must succeed and leave
    no process and no listening port of the stack behind."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        stack = EphemeralStack.prepare(Path(tmp), replicas, **settings)
        started = stack.run("up")
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            yield stack
        finally:
            stopped = stack.make("down", timeout=180)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            left = stack.leftovers()
            assert left == [], f"processes of the stack left after make down: {left}"
            listening = stack.listening_ports()
            assert listening == [], f"ports of the stack still listening: {listening}"
