"""A stack deployed on a swarm, as the tests see it (tests/swarm): its services' tasks, their
containers and addresses (one node: every task's container is on this engine), Prometheus, and
what nginx proxied to. Nothing here deploys; `make stack-deploy` does."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from stack.monitoring_auth import SETTING, USER

NAMESPACE = "com.docker.stack.namespace"
# The api tasks a test stack runs (API_REPLICAS).
REPLICAS = 3


def docker(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class SwarmStack:
    name: str
    env: dict[str, str]
    settings: dict[str, str]
    converged_in: float
    timings: dict[str, float] = field(default_factory=dict)

    def docker(self, *args: str, timeout: float = 120) -> str:
        return docker(self.env, *args, timeout=timeout)

    def url(self, variable: str) -> str:
        return f"http://127.0.0.1:{self.settings[variable]}"

    @property
    def nginx(self) -> str:
        return self.url("NGINX_PORT")

    def service(self, name: str) -> str:
        return f"{self.name}_{name}"

    def replicas(self) -> dict[str, tuple[int, int]]:
        """Each service: (tasks running, and so healthy where it has a check; tasks wanted)."""
        listed = self.docker("stack", "services", self.name, "--format", "{{.Name}} {{.Replicas}}")
        counts = {}
        for line in listed.splitlines():
            service, replicas = line.split(maxsplit=1)
            # A job ("0/1 (1/1 completed)") counts its completed runs.
            counted = replicas.split("(")[-1].removesuffix(" completed)")
            running, wanted = counted.split()[0].split("/")
            counts[service.removeprefix(f"{self.name}_")] = (int(running), int(wanted))
        return counts

    def wait_for_replicas(self, service: str, count: int, timeout: float) -> float:
        started = time.monotonic()
        while (
            self.replicas().get(service) != (count, count) or len(self.containers(service)) != count
        ):
            assert time.monotonic() - started < timeout, self.replicas()
            time.sleep(0.5)
        return time.monotonic() - started

    def containers(self, service: str) -> list[str]:
        """The service's running containers (one node: every task's is here)."""
        return self.docker(
            "ps", "--quiet", "--no-trunc", "--filter", "status=running",
            "--filter", f"label=com.docker.swarm.service.name={self.service(service)}",
        ).split()  # fmt: skip

    def inspect(self, container: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.docker("inspect", container))
        return found[0]

    def addresses(self, service: str) -> set[str]:
        network = f"{self.name}_private"
        return {
            self.inspect(c)["NetworkSettings"]["Networks"][network]["IPAddress"]
            for c in self.containers(service)
        }

    def prometheus(self, path: str, **params: str) -> Any:
        """Prometheus's API, with the monitoring plane's credential."""
        response = httpx.get(
            f"{self.url('PROMETHEUS_PORT')}{path}", params=params, timeout=10,
            auth=httpx.BasicAuth(USER, self.settings[SETTING]),
        )  # fmt: skip
        response.raise_for_status()
        return response.json()

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = self.prometheus("/api/v1/query", query=promql)
        result: list[dict[str, Any]] = response["data"]["result"]
        return result

    def _output(self, container: str, since: str | None = None) -> subprocess.CompletedProcess[str]:
        options = ["--since", since] if since else []
        return subprocess.run(
            ["docker", "logs", *options, container], env=self.env, capture_output=True,
            text=True, timeout=60, check=True,
        )  # fmt: skip

    def _nginx_output(self, since: str) -> subprocess.CompletedProcess[str]:
        [container] = self.containers("nginx")
        return self._output(container, since)

    def json_log(self, container: str) -> list[dict[str, Any]]:
        """A container's JSON log lines, stdout's and stderr's (a task that has exited too)."""
        output = self._output(container)
        lines = (output.stdout + output.stderr).splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def nginx_log(self, since: str) -> list[dict[str, Any]]:
        """nginx's access log lines (its stdout) since this time (RFC 3339)."""
        logged = self._nginx_output(since).stdout
        return [json.loads(line) for line in logged.splitlines() if line.startswith("{")]

    def nginx_errors(self, since: str) -> str:
        """nginx's error log (its stderr) since this time."""
        return self._nginx_output(since).stderr

    def nginx_upstreams(self, since: str) -> set[str]:
        """The API addresses nginx proxied to since this time (its access log's upstream_addr)."""
        addresses = set()
        for line in self.nginx_log(since):
            for upstream in str(line.get("upstream_addr", "")).split(","):
                addresses.add(upstream.strip().rsplit(":", 1)[0])
        return addresses - {""}

    def failures(self, since: str) -> Counter[str]:
        """What nginx answered other than 2xx since this time: status, upstream, problem."""
        return Counter(
            f"{line.get('status')} from {line.get('upstream_addr') or 'nginx'}"
            f" {line.get('upstream_status', '')}"
            for line in self.nginx_log(since)
            if not str(line.get("status", "")).startswith("2")
        )

    def leftovers(self) -> list[str]:
        label = f"label={NAMESPACE}={self.name}"
        found = []
        for kind, listing in [
            ("container", ["ps", "--all", "--format", "{{.Names}}"]),
            ("service", ["service", "ls", "--format", "{{.Name}}"]),
            ("network", ["network", "ls", "--format", "{{.Name}}"]),
            ("config", ["config", "ls", "--format", "{{.Name}}"]),
            ("volume", ["volume", "ls", "--format", "{{.Name}}"]),
        ]:
            found += [f"{kind} {n}" for n in self.docker(*listing, "--filter", label).split()]
        return found
