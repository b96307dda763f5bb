"""A throwaway Compose stack: a project of its own, beside anything `make up` started.

Its settings file is made like `.env` (random secrets) in a temporary folder, with a project name
of its own (COMPOSE_PROJECT_NAME), free host ports for every published port, nginx on loopback
only, and optionally a second Compose file (COMPOSE_FILE) that mounts faster-scraping Prometheus
and a higher nginx rate over the committed ones. It is brought up and taken down the way a user
does, `make up` and `make clean` with STACK=compose and STACK_ENV_FILE naming that file, and the
exit asserts that no container, network or volume of the project is left.

    with throwaway_compose_stack("e2e", engine.env, replicas=3, scrape_interval="1s") as stack:
        httpx.get(stack.nginx + "/health/live")
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from stack.config.nginx import compose_http_conf
from stack.config.prometheus import render_compose_prometheus
from stack.envfile import ensure_env, read_env, set_values
from stack.monitoring import Monitoring
from stack.paths import NGINX_DIR, REPO_ROOT
from stack.procs import free_ports
from stack.running import LiveStack

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Every host port docker-compose.yml publishes, by the variable that sets it.
PUBLISHED = (
    "NGINX_PORT",
    "NGINX_TLS_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
    "GRAFANA_PORT",
    "LOCUST_WEB_PORT",
)
PROJECT_LABEL = "com.docker.compose.project"
API_PORT = 8000
# Variables of the caller's environment that would steer Compose or the Makefile elsewhere
# (the environment wins over the settings file in Compose's interpolation).
_FOREIGN = ("COMPOSE_", "DOCKER_", "STACK", "BACKUP_", "LOADTEST_", "NATIVE_", "API_", "NGINX_")


def _docker(env: Mapping[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], env=dict(env), capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class ComposeStack(LiveStack):
    project: str
    folder: Path
    env: dict[str, str]
    # What `make up` printed when the stack came up (throwaway_compose_stack keeps it).
    up_output: str = ""
    runner = "compose"

    @classmethod
    def of(cls, stack: LiveStack) -> ComposeStack:
        """`stack` as the Compose stack it is, for what only Compose has (containers, logs)."""
        assert isinstance(stack, cls), stack
        return stack

    @classmethod
    def prepare(
        cls,
        folder: Path,
        engine_env: Mapping[str, str],
        *,
        replicas: int = 3,
        scrape_interval: str | None = None,
        nginx_rate: str | None = None,
        override: Mapping[str, Any] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> Self:
        """The settings file (and the optional second Compose file) in `folder`; nothing runs.

        `override` is more of that second file: services by name, merged the way Compose merges
        files (a test's deliberately broken variant, say).
        """
        project = f"fastapi-stack-test-{secrets.token_hex(4)}"
        env_file = folder / ".env"
        ensure_env(REPO_ROOT, env_file)
        values = {
            "COMPOSE_PROJECT_NAME": project,
            "API_REPLICAS": str(replicas),
            "NGINX_BIND_ADDRESS": "127.0.0.1",
            "MONITORING_BIND_ADDRESS": "127.0.0.1",
            "BACKUP_DIR": str(folder / "backups"),
            **dict(zip(PUBLISHED, map(str, free_ports(len(PUBLISHED))), strict=True)),
        }
        mounts: dict[str, list[str]] = {}
        if scrape_interval:
            rendered = render_compose_prometheus(scrape_interval, folder / "prometheus.yml")
            mounts["prometheus"] = [f"{rendered}:/etc/prometheus/prometheus.yml:ro"]
        if nginx_rate:
            http_conf = folder / "nginx-http.conf"
            http_conf.write_text(compose_http_conf(nginx_rate))
            http_conf.chmod(0o644)
            mounts["nginx"] = [f"{http_conf}:/etc/nginx/conf.d/http.conf:ro"]
        services: dict[str, Any] = {name: {"volumes": paths} for name, paths in mounts.items()}
        for name, changes in (override or {}).items():
            services[name] = {**services.get(name, {}), **changes}
        if services:
            second = folder / "docker-compose.test.yml"
            second.write_text(
                "# A test stack's changes to docker-compose.yml (stack/compose.py).\n"
                + yaml.safe_dump({"services": services}, sort_keys=False)
            )
            values["COMPOSE_FILE"] = f"{COMPOSE_FILE}:{second}"
        set_values(env_file, {**values, **(settings or {})})
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
        env = {k: v for k, v in env.items() if k not in read_env(env_file)}
        env |= {**engine_env, "STACK_ENV_FILE": str(env_file)}
        return cls(project, folder, env)

    # --- Compose and Docker -------------------------------------------------------------------

    @property
    def env_file(self) -> str:
        return self.env["STACK_ENV_FILE"]

    @property
    def settings(self) -> dict[str, str]:
        return read_env(self.env_file)

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS` on this project (the Makefile's command line)."""
        result = subprocess.run(
            ["docker", "compose", "--env-file", self.env_file, *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)}: {result.stderr.strip()}")
        return result

    def docker(self, *args: str, timeout: float = 120) -> str:
        return _docker(self.env, *args, timeout=timeout)

    def containers(self, service: str, *, running: bool = False) -> list[str]:
        """Ids of the service's containers (all, or those running), by replica number."""
        listed = self.docker(
            "ps", "--no-trunc", *(("--filter", "status=running") if running else ("--all",)),
            "--filter", f"label={PROJECT_LABEL}={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--format", '{{.ID}} {{.Names}} {{.Label "com.docker.compose.container-number"}}',
        )  # fmt: skip
        rows = [line.split() for line in listed.splitlines() if line.strip()]
        # Only Compose's own names: containers inherit the labels of the image (see _listed).
        ours = [row for row in rows if len(row) == 3 and row[1].startswith(f"{self.project}-")]
        return [cid for cid, _, _ in sorted(ours, key=lambda row: int(row[2]))]

    def inspect(self, container: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.docker("inspect", container))
        return found[0]

    def address(self, container: str, network: str = "private") -> str:
        networks = self.inspect(container)["NetworkSettings"]["Networks"]
        address: str = networks[f"{self.project}_{network}"]["IPAddress"]
        return address

    def gateway(self, network: str = "public") -> str:
        """The host's address on one of the project's networks."""
        [config] = json.loads(self.docker("network", "inspect", f"{self.project}_{network}"))[0][
            "IPAM"
        ]["Config"]
        gateway: str = config["Gateway"]
        return gateway

    def container_logs(self, container: str) -> tuple[str, str]:
        """A container's stdout and stderr, each as one text."""
        result = subprocess.run(
            ["docker", "logs", container], env=self.env, capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip
        return result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes of the project (none after `make clean`)."""
        return [*self.running(), *self._listed("volume", "volume", "ls")]

    def running(self) -> list[str]:
        return [
            *self._listed("container", "ps", "--all"),
            *self._listed("network", "network", "ls"),
        ]

    def _listed(self, kind: str, *listing: str) -> list[str]:
        label = f"label={PROJECT_LABEL}={self.project}"
        names = self.docker(
            *listing,
            "--filter",
            label,
            "--format",
            "{{.Names}}" if kind == "container" else "{{.Name}}",
        ).split()
        if kind == "container":
            # Compose labels the images it builds with the project too, and a container inherits
            # its image's labels: another project (or a swarm stack) running the same tag carries
            # this project's label. Compose names its own containers <project>-<service>-<n>.
            names = [name for name in names if name.startswith(f"{self.project}-")]
        return [f"{kind} {name}" for name in names]

    # --- LiveStack ----------------------------------------------------------------------------

    def _url(self, variable: str) -> str:
        return f"http://127.0.0.1:{self.settings[variable]}"

    @property
    def replicas(self) -> int:
        return len(self.containers("api", running=True))

    @property
    def nginx(self) -> str:
        return self._url("NGINX_PORT")

    @property
    def nginx_port(self) -> int:
        return int(self.settings["NGINX_PORT"])

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.settings['NGINX_TLS_PORT']}"

    @property
    def monitoring_plane(self) -> Monitoring:
        # The Pushgateway publishes no port, as in any Compose deployment: the engine's host
        # reaches it at its address on the private network.
        pushgateway = self.containers("pushgateway", running=True)
        return Monitoring(
            self._url("PROMETHEUS_PORT"),
            self._url("ALERTMANAGER_PORT"),
            f"http://{self.address(pushgateway[0])}:9091" if pushgateway else None,
            self.monitoring_auth,
        )

    def replica_addresses(self) -> list[str]:
        return [f"{self.address(c)}:{API_PORT}" for c in self.containers("api", running=True)]

    def replica_urls(self) -> list[str]:
        # The engine's host reaches its containers' addresses (a Linux engine; not Docker Desktop).
        return [f"http://{address}" for address in self.replica_addresses()]

    def replica_ids(self) -> list[str]:
        states = [self.inspect(c) for c in self.containers("api", running=True)]
        return [f"{s['Id'][:12]}@{s['State']['StartedAt']}" for s in states]

    def stop_replica(self, replica: int) -> None:
        # `docker stop` waits the container's stop_grace_period, as `compose stop` would.
        self.docker("stop", self.containers("api")[replica - 1], timeout=90)

    def start_replica(self, replica: int) -> None:
        self.docker("start", self.containers("api")[replica - 1])
        self.wait_until_replica_serves(replica)

    def stop_replicas(self) -> None:
        self.compose("stop", "api")

    def start_replicas(self) -> None:
        self.compose("start", "api")
        for replica in range(1, len(self.containers("api")) + 1):
            self.wait_until_replica_serves(replica)

    def stop_service(self, service: str) -> None:
        self.compose("stop", service)

    def start_service(self, service: str) -> None:
        self.compose("start", service)

    def log(self, name: str) -> str:
        service, _, stream = name.partition(".")
        if service.startswith("api-"):
            out, err = self.container_logs(self.containers("api")[int(service[4:]) - 1])
        else:
            out, err = self.container_logs(self.containers(service)[0])
        if service == "nginx":
            # As natively: its access log (stdout) and its error log (stderr) apart.
            return err if stream == "error" else out
        return out + err

    def logs(self) -> dict[str, str]:
        listed = self.compose("config", "--services").stdout.split()
        found: dict[str, str] = {}
        for service in listed:
            containers = self.containers(service)
            for number, container in enumerate(containers, start=1):
                out, err = self.container_logs(container)
                if service == "nginx":
                    found |= {"nginx": out, "nginx.error": err}
                elif service == "api" or len(containers) > 1:
                    found[f"{service}-{number}"] = out + err
                else:
                    found[service] = out + err
        return found

    def datastore(self, service: str) -> tuple[str, int]:
        ports = {"postgres": 5432, "redis": 6379}
        return self.address(self.containers(service)[0]), ports[service]

    def nginx_status(self) -> str:
        url = "http://127.0.0.1:8081/stub_status"
        return self.compose("exec", "-T", "nginx", "wget", "-q", "-O", "-", url).stdout

    def nginx_http_conf(self) -> str:
        mounted = self.folder / "nginx-http.conf"
        source = mounted if mounted.exists() else NGINX_DIR / "compose" / "http.conf"
        return source.read_text()


@contextmanager
def throwaway_compose_stack(
    prefix: str,
    engine_env: Mapping[str, str],
    *,
    replicas: int = 3,
    scrape_interval: str | None = None,
    nginx_rate: str | None = None,
    override: Mapping[str, Any] | None = None,
    **settings: str,
) -> Iterator[ComposeStack]:
    """Up (`make up`) on entry; on exit `make clean`, which must succeed and leave no container,
    network or volume of the project behind."""
    with tempfile.TemporaryDirectory(prefix=f"compose-{prefix}-") as tmp:
        stack = ComposeStack.prepare(
            Path(tmp),
            engine_env,
            replicas=replicas,
            scrape_interval=scrape_interval,
            nginx_rate=nginx_rate,
            override=override,
            settings=settings,
        )
        started = stack.make("up", timeout=900)
        stack.up_output = started.stdout + started.stderr
        try:
            assert started.returncode == 0, started.stdout[-5000:] + started.stderr[-5000:]
            yield stack
        finally:
            cleaned = stack.make("clean", timeout=300)
            assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
            assert stack.leftovers() == []
