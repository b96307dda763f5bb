"""A throwaway native stack on free loopback ports in a folder of its own.

The end-to-end tests, the chaos suite and the benchmarks each start one, so they never touch the
stack a user brought up with `make up` (default ports, the checkout's .env and data).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx

from stack.monitoring_auth import SETTING, USER
from stack.paths import REPO_ROOT
from stack.procs import free_block, free_ports, port_open
from stack.servers import postgres_bindir
from stack.tls import tls_dir
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
            [sys.executable, "-m", "stack.native", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def make(self, target: str) -> subprocess.CompletedProcess[str]:
        """A `make` target run against this stack, as a user runs it (STACK=native)."""
        return subprocess.run(
            ["make", target],
            cwd=REPO_ROOT,
            env={**self.env, "STACK": "native"},
            capture_output=True,
            text=True,
            timeout=180,
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

    def log(self, program: str) -> str:
        return (self.data_dir / "stack" / "logs" / f"{program}.log").read_text(errors="replace")

    def secret(self, key: str) -> str:
        for line in (self.data_dir / ".env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name == key:
                return value
        raise KeyError(key)

    def sql(self, query: str) -> list[list[str]]:
        """Rows of a query run with psql as the application's role (fields as text)."""
        result = subprocess.run(
            [
                str(postgres_bindir() / "psql"), "--no-psqlrc", "--tuples-only", "--no-align",
                "--field-separator=\t", f"--host={self.topology.host}",
                f"--port={self.topology.ports['postgres']}",
                f"--username={self.secret('POSTGRES_USER')}",
                f"--dbname={self.secret('POSTGRES_DB')}", "--command", query,
            ],
            env={"PGPASSWORD": self.secret("POSTGRES_PASSWORD"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )  # fmt: skip
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    @property
    def nginx(self) -> str:
        return self.topology.url("nginx")

    @property
    def https(self) -> str:
        """nginx's HTTPS entry (HTTP/2), with the local CA's certificate for localhost."""
        return f"https://{self.topology.address('nginx-tls')}"

    @property
    def ca(self) -> Path:
        """The local CA `up` made for this stack (no certificate is configured): what a client
        trusts, as `curl --cacert` does."""
        return tls_dir(Path(self.env["STACK_ENV_FILE"])) / "ca.crt"

    @property
    def prometheus(self) -> str:
        return self.topology.url("prometheus")

    def replica_url(self, replica: int) -> str:
        return f"http://{self.topology.api_addresses[replica - 1]}"

    @property
    def monitoring_auth(self) -> httpx.BasicAuth:
        """The credential Prometheus, Alertmanager and the Pushgateway require."""
        return httpx.BasicAuth(USER, self.secret(SETTING))

    def monitoring(self, service: str) -> httpx.Client:
        """A client for "prometheus", "alertmanager" or "pushgateway", with the credential: every
        test's call to the monitoring plane goes through here."""
        return httpx.Client(
            base_url=self.topology.url(service), auth=self.monitoring_auth, timeout=10
        )

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql} | ({} if at is None else {"time": f"{at:.3f}"})
        with self.monitoring("prometheus") as prometheus:
            response = prometheus.get("/api/v1/query", params=params)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def wait_for(
        self, promql: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql} never satisfied the check; last result: {result}")

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's alerts, pending and firing."""
        with self.monitoring("prometheus") as prometheus:
            response = prometheus.get("/api/v1/alerts")
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()["data"]["alerts"]
        return alerts

    def alertmanager_alerts(self, name: str) -> list[dict[str, Any]]:
        """Alertmanager's alerts named `name`, active, silenced and inhibited."""
        with self.monitoring("alertmanager") as alertmanager:
            response = alertmanager.get("/api/v2/alerts", params={"filter": f'alertname="{name}"'})
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    def served_by(self, request_ids: set[str]) -> set[str]:
        """Addresses of the replicas whose own access log shows any of these requests.

        The replicas' logs, not nginx's: a replica writes its line at the end of its loop turn,
        while nginx buffers its access log for up to a second (flush=1s).
        """
        return {
            address
            for replica, address in enumerate(self.topology.api_addresses, start=1)
            if any(rid in self.log(f"api-{replica}") for rid in request_ids)
        }

    def wait_for_full_pool(self, timeout: float = 60) -> float:
        """Until nginx sends traffic to every replica again; returns the seconds it took.

        A replica that failed stays out of nginx's pool for fail_timeout (10 s) after it is
        healthy again, so "healthy" alone does not mean "serving".
        """
        start = time.monotonic()
        expected = set(self.topology.api_addresses)
        with httpx.Client(base_url=self.nginx, timeout=10) as client:
            while time.monotonic() - start < timeout:
                ids = {f"pool-{time.monotonic_ns()}-{n}" for n in range(12)}
                for rid in ids:
                    # Answered by the API alone (422, no database or cache) and, unlike /health,
                    # written to its access log.
                    client.get("/items/0", headers={"X-Request-ID": rid})
                time.sleep(0.1)  # the replica writes its line at the end of its loop turn
                if self.served_by(ids) >= expected:
                    return time.monotonic() - start
                time.sleep(0.2)
        raise AssertionError(f"nginx did not route to every replica within {timeout:.0f}s")

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
            stopped = stack.make("down")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            left = stack.leftovers()
            assert left == [], f"processes of the stack left after make down: {left}"
            listening = stack.listening_ports()
            assert listening == [], f"ports of the stack still listening: {listening}"
