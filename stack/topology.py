"""One description of the stack's services, names and ports, for the native runner and the checks.

Compose keeps its own file (docker-compose.yml); tests/static hold the two in agreement. Natively
every service listens on loopback; only these addresses differ from Compose's, and the configs
rendered from them (nginx includes, Prometheus targets, supervisord programs) are the only
generated files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HOST = "127.0.0.1"

# Compose service name → (env var that overrides the native port, default native port).
# Public ports match Compose's published ones; private ones avoid the distribution defaults
# (5432, 6379) so a system PostgreSQL or Redis on the same machine does not collide.
PORTS: dict[str, tuple[str, int]] = {
    "nginx": ("NGINX_PORT", 8080),
    # nginx's HTTPS entry (HTTP/2), beside or instead of the plain one (NGINX_HTTP, stack/tls).
    "nginx-tls": ("NGINX_TLS_PORT", 8443),
    "nginx-internal": ("NATIVE_NGINX_INTERNAL_PORT", 8081),
    "prometheus": ("PROMETHEUS_PORT", 9090),
    "alertmanager": ("ALERTMANAGER_PORT", 9093),
    "postgres": ("NATIVE_POSTGRES_PORT", 15432),
    "redis": ("NATIVE_REDIS_PORT", 16379),
    "nginx-exporter": ("NATIVE_NGINX_EXPORTER_PORT", 9113),
    "redis-exporter": ("NATIVE_REDIS_EXPORTER_PORT", 9121),
    "postgres-exporter": ("NATIVE_POSTGRES_EXPORTER_PORT", 9187),
    "node-exporter": ("NATIVE_NODE_EXPORTER_PORT", 9100),
    # Probes the API through nginx's public port for the edge availability SLI.
    "blackbox-exporter": ("NATIVE_BLACKBOX_EXPORTER_PORT", 9115),
    # Holds what a load test's Locust pushes (loadtest/), so Prometheus scrapes a target that is
    # always up rather than one that exists only while a test runs.
    "pushgateway": ("NATIVE_PUSHGATEWAY_PORT", 9091),
}
# Replica i (1-based) listens on API_BASE_PORT + i.
API_BASE_PORT = ("NATIVE_API_BASE_PORT", 8000)

# Every Compose service and whether the native stack runs it (Grafana has no Debian package).
# The one-shots (migrate, monitoring-auth) are steps of `stack up` natively, not programs.
SERVICES = (
    "nginx", "api", "migrate", "postgres", "redis", "prometheus", "alertmanager", "grafana",
    "nginx-exporter", "redis-exporter", "postgres-exporter", "node-exporter", "blackbox-exporter",
    "pushgateway", "monitoring-auth",
    "locust-master", "locust-worker", "backup",
)  # fmt: skip
NOT_NATIVE = frozenset({"grafana"})
# Compose's `loadtest` profile: started only for a load test. Natively `make loadtest` runs them
# as plain processes for the length of the run (loadtest/locust_procs.py), not under supervisord.
LOADTEST_PROFILE = frozenset({"locust-master", "locust-worker"})
# Compose's `backup` profile: scheduled backups. Natively `make backup` takes one when run (a
# timer of the host's can run it on a schedule).
BACKUP_PROFILE = frozenset({"backup"})


@dataclass(frozen=True)
class Topology:
    replicas: int
    ports: Mapping[str, int]
    api_base_port: int
    scrape_interval: str = "15s"
    host: str = HOST
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Topology:
        replicas = int(env.get("API_REPLICAS", "3"))
        if not 1 <= replicas <= 32:
            raise ValueError(f"API_REPLICAS must be 1-32, got {replicas}")
        ports = {name: int(env.get(var, default)) for name, (var, default) in PORTS.items()}
        base = int(env.get(API_BASE_PORT[0], API_BASE_PORT[1]))
        topology = cls(
            replicas=replicas,
            ports=ports,
            api_base_port=base,
            scrape_interval=env.get("NATIVE_SCRAPE_INTERVAL", "15s"),
        )
        used = [*ports.values(), *topology.api_ports]
        if len(set(used)) != len(used):
            raise ValueError(f"two native services share a port: {sorted(used)}")
        return topology

    @property
    def api_ports(self) -> list[int]:
        return [self.api_base_port + i for i in range(1, self.replicas + 1)]

    @property
    def api_addresses(self) -> list[str]:
        return [f"{self.host}:{port}" for port in self.api_ports]

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    def url(self, service: str) -> str:
        return f"http://{self.address(service)}"
