"""What a running stack offers its tests, whichever runner started it: `LiveStack`, the interface
the end-to-end tests use, implemented by the native stack (stack/ephemeral.py) and the Compose one
(stack/compose.py).

A runner says where its services answer and how to reach its replicas' processes and logs (the
abstract members); what is the same for both is written here once: reading Prometheus (through
stack.monitoring, the one client, with the monitoring credential), finding which replicas served
a request, waiting for nginx to route to every replica again, running SQL and `make`.
"""

from __future__ import annotations

import re
import subprocess
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import httpx

from stack.envfile import read_env
from stack.monitoring import Monitoring, Result
from stack.monitoring_auth import SETTING, USER
from stack.paths import REPO_ROOT
from stack.servers import postgres_bindir
from stack.tls import tls_dir

Rows = list[list[str]]


class LiveStack(Protocol):
    """A stack a test brought up: native or Compose (`runner`)."""

    runner: str
    env: dict[str, str]

    # --- what each runner says ----------------------------------------------------------------

    @property
    @abstractmethod
    def replicas(self) -> int:
        """API replicas running now."""

    @property
    @abstractmethod
    def nginx(self) -> str:
        """The public entry's URL, as a client on this machine reaches it."""

    @property
    @abstractmethod
    def nginx_port(self) -> int: ...

    @property
    @abstractmethod
    def https(self) -> str:
        """nginx's HTTPS entry (HTTP/2), as a client on this machine reaches it."""

    @property
    @abstractmethod
    def monitoring_plane(self) -> Monitoring:
        """Where Prometheus, Alertmanager and the Pushgateway answer, with the credential
        (`monitoring_auth`)."""

    @property
    @abstractmethod
    def env_file(self) -> str:
        """The stack's settings file (STACK_ENV_FILE)."""

    @abstractmethod
    def replica_urls(self) -> list[str]:
        """Each replica's own URL, bypassing nginx, in replica order."""

    @abstractmethod
    def replica_addresses(self) -> list[str]:
        """Each replica's host:port as nginx's access log names it (upstream_addr)."""

    @abstractmethod
    def replica_ids(self) -> list[str]:
        """One token per replica that changes whenever its process is replaced or restarted."""

    @abstractmethod
    def stop_replica(self, replica: int) -> None:
        """Stop replica `replica` (1-based) the way a deploy does: SIGTERM, then its drain."""

    @abstractmethod
    def start_replica(self, replica: int) -> None: ...

    @abstractmethod
    def stop_replicas(self) -> None: ...

    @abstractmethod
    def start_replicas(self) -> None: ...

    @abstractmethod
    def log(self, name: str) -> str:
        """A program's output by the native runner's names: `api-2`, `postgres`, `nginx` (its
        access log, stdout) and `nginx.error` (its error log, stderr)."""

    @abstractmethod
    def logs(self) -> dict[str, str]:
        """Every program's output, by those names."""

    @abstractmethod
    def datastore(self, service: str) -> tuple[str, int]:
        """Where PostgreSQL or Redis answers for a client on this machine (host, port)."""

    @abstractmethod
    def stop_service(self, service: str) -> None:
        """Stop one service by its Compose name ("postgres", "redis"), as an outage would."""

    @abstractmethod
    def start_service(self, service: str) -> None: ...

    @abstractmethod
    def running(self) -> list[str]:
        """What of the stack still runs: processes natively; containers and networks under
        Compose (its volumes are data, kept by `make down`)."""

    @abstractmethod
    def nginx_status(self) -> str:
        """nginx's stub_status page, from its internal port."""

    @abstractmethod
    def nginx_http_conf(self) -> str:
        """The conf.d/http.conf nginx runs with (rate and connection limits)."""

    # --- the same for both --------------------------------------------------------------------

    @property
    def ca(self) -> Path:
        """The local CA `make up` made for this stack (its settings name no certificate): what a
        client trusts, as `curl --cacert` does."""
        return tls_dir(Path(self.env_file)) / "ca.crt"

    @property
    def prometheus(self) -> str:
        return self.monitoring_plane.prometheus

    @property
    def alertmanager(self) -> str:
        return self.monitoring_plane.alertmanager

    @property
    def monitoring_auth(self) -> httpx.BasicAuth:
        """The credential Prometheus, Alertmanager and the Pushgateway require."""
        return httpx.BasicAuth(USER, self.secret(SETTING))

    def monitoring(self, service: str) -> httpx.Client:
        """A client for "prometheus", "alertmanager" or "pushgateway", with the credential: every
        test's call to the monitoring plane goes through here or `monitoring_plane`."""
        return self.monitoring_plane.client(service)

    def query(self, promql: str, at: float | None = None) -> Result:
        return self.monitoring_plane.query(promql, at)

    def wait_for(
        self, promql: str, predicate: Callable[[Result], bool], timeout: float = 30
    ) -> Result:
        return self.monitoring_plane.wait_for(promql, predicate, timeout)

    def alerts(self) -> Result:
        """Prometheus's alerts, pending and firing."""
        return self.monitoring_plane.alerts()

    def alertmanager_alerts(self, name: str) -> Result:
        """Alertmanager's alerts named `name`, active, silenced and inhibited."""
        return self.monitoring_plane.alertmanager_alerts(f'alertname="{name}"')

    def secret(self, key: str) -> str:
        return read_env(self.env_file)[key]

    def make(
        self, *args: str, timeout: float = 600, environment: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`make ARGS` in the checkout, as a user runs it, aimed at this stack; `environment`
        adds variables (which win over the settings file, as in a user's shell)."""
        return subprocess.run(
            ["make", *args],
            cwd=REPO_ROOT,
            env={**self.env, "STACK": self.runner, **(environment or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def sql(self, query: str) -> Rows:
        """Rows of a query run with psql as the application's role (fields as text)."""
        host, port = self.datastore("postgres")
        result = subprocess.run(
            [
                str(postgres_bindir() / "psql"), "--no-psqlrc", "--tuples-only", "--no-align",
                "--field-separator=\t", f"--host={host}", f"--port={port}",
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

    def nginx_conn_limit(self) -> int:
        """Requests in progress nginx allows one client address (limit_conn)."""
        conf = self.nginx_http_conf()
        match = re.search(r"^limit_conn per_ip_conn (\d+);", conf, re.MULTILINE)
        assert match, conf
        return int(match[1])

    def wait_until_replica_serves(self, replica: int, timeout: float = 120) -> None:
        # 120 s, the native runner's own bound (HEALTH_TIMEOUT_SECONDS): three interpreters
        # importing the app on a loaded 2-core host took over 40 s once.
        url = f"{self.replica_urls()[replica - 1]}/health/live"
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"replica {replica} does not serve at {url}"
            time.sleep(0.3)

    def served_by(self, request_ids: Iterable[str]) -> set[str]:
        """Addresses of the replicas whose own log shows any of these requests.

        The replicas' logs, not nginx's: a replica writes its line at the end of its loop turn,
        while nginx buffers its access log for up to a second (flush=1s).
        """
        ids = set(request_ids)
        return {
            address
            for replica, address in enumerate(self.replica_addresses(), start=1)
            if any(rid in self.log(f"api-{replica}") for rid in ids)
        }

    def wait_for_full_pool(self, timeout: float = 60) -> float:
        """Until nginx sends traffic to every replica again; returns the seconds it took.

        A replica that failed stays out of nginx's pool for fail_timeout (10 s) after it is
        healthy again, so "healthy" alone does not mean "serving".
        """
        start = time.monotonic()
        expected = set(self.replica_addresses())
        with httpx.Client(base_url=self.nginx, timeout=10) as client:
            while time.monotonic() - start < timeout:
                ids = {f"pool-{time.monotonic_ns()}-{n}" for n in range(4 * len(expected))}
                for rid in ids:
                    # Answered by the API alone (422, no database or cache) and, unlike /health,
                    # written to its access log.
                    client.get("/items/0", headers={"X-Request-ID": rid})
                time.sleep(0.1)  # the replica writes its line at the end of its loop turn
                if self.served_by(ids) >= expected:
                    return time.monotonic() - start
                time.sleep(0.2)
        raise AssertionError(f"nginx did not route to every replica within {timeout:.0f}s")

    def every_replica(self, path: str) -> list[httpx.Response]:
        """GET path from each replica directly, in replica order."""
        return [httpx.get(f"{url}{path}", timeout=10) for url in self.replica_urls()]
