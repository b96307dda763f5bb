"""Render the native stack's configuration from the shared service configs and the topology.

Only addresses and paths change: nginx.conf, the Prometheus rules, the Alertmanager config and
the exporters' settings are the very files Compose mounts.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from native.paths import REPO_ROOT
from native.servers import postgres_bindir
from native.topology import Topology

sys.path.insert(0, str(REPO_ROOT / "services" / "nginx"))
from render import nginx_command, render_nginx  # type: ignore[import-not-found]

SERVICES_DIR = REPO_ROOT / "services"
API_DIR = SERVICES_DIR / "api"
PROMETHEUS_DIR = SERVICES_DIR / "prometheus"
ALERTMANAGER_CONFIG = SERVICES_DIR / "alertmanager" / "alertmanager.yml"
REDIS_CONFIG = SERVICES_DIR / "redis" / "redis.conf"


@dataclass(frozen=True)
class StackDirs:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"

    @property
    def alertmanager(self) -> Path:
        return self.root / "alertmanager"

    @property
    def supervisor_conf(self) -> Path:
        return self.run / "supervisord.conf"


def _native_target(target: str, topology: Topology) -> list[str]:
    host, _, _port = target.rpartition(":")
    if host in ("localhost", "prometheus"):
        return [topology.address("prometheus")]
    if host == "api":
        return topology.api_addresses
    if host in topology.ports:
        return [topology.address(host)]
    raise ValueError(f"prometheus.yml names {target!r}, which the native topology does not know")


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    raise ValueError(f"not a Prometheus duration: {duration!r}")


def _shorter(a: str, b: str) -> str:
    return a if _seconds(a) <= _seconds(b) else b


def render_prometheus(topology: Topology, dirs: StackDirs) -> Path:
    """services/prometheus/prometheus.yml with Compose's addresses swapped for loopback ones."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config.setdefault("global", {})["scrape_interval"] = topology.scrape_interval
    config["global"]["evaluation_interval"] = topology.scrape_interval
    # Prometheus refuses a timeout longer than the interval; tests scrape every second.
    config["global"]["scrape_timeout"] = _shorter(
        config["global"].get("scrape_timeout", "10s"), topology.scrape_interval
    )
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    for job in config["scrape_configs"]:
        targets: list[str] = []
        for static in job.pop("static_configs", []):
            for target in static["targets"]:
                targets += _native_target(target, topology)
        for dns in job.pop("dns_sd_configs", []):
            # Compose finds replicas through DNS; natively they are a rendered list.
            targets += _native_target(f"{dns['names'][0]}:{dns['port']}", topology)
        job["static_configs"] = [{"targets": targets}]
    for alerting in config.get("alerting", {}).get("alertmanagers", []):
        for static in alerting.get("static_configs", []):
            static["targets"] = [topology.address("alertmanager")]
    target = dirs.run / "prometheus.yml"
    target.write_text(
        "# Rendered by native/render.py from services/prometheus/prometheus.yml.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return target


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    directory: Path | None = None
    environment: Mapping[str, str] | None = None
    user: str | None = None
    stopsignal: str = "TERM"
    stopwaitsecs: int = 10
    startsecs: int = 1

    def section(self, logs: Path) -> str:
        lines = [
            f"[program:{self.name}]",
            f"command={shlex.join(self.command).replace('%', '%%')}",
            "autostart=false",  # `stack up` starts programs in dependency order
            "autorestart=true",
            f"startsecs={self.startsecs}",
            "startretries=5",
            f"stopsignal={self.stopsignal}",
            f"stopwaitsecs={self.stopwaitsecs}",
            # Signals reach the whole process group, so no child outlives `make down`.
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={logs / self.name}.log",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
        if self.directory is not None:
            lines.append(f"directory={self.directory}")
        if self.user is not None:
            lines.append(f"user={self.user}")
        if self.environment:
            pairs = ",".join(
                f'{key}="{value.replace("%", "%%")}"' for key, value in self.environment.items()
            )
            lines.append(f"environment={pairs}")
        return "\n".join(lines) + "\n"


def api_environment(topology: Topology, env: Mapping[str, str], replica: int) -> dict[str, str]:
    passthrough = {
        key: value
        for key, value in env.items()
        if key
        in {
            "APP_ENV", "LOG_LEVEL", "DOCS_ENABLED", "SHUTDOWN_GRACE_SECONDS", "DB_POOL_SIZE",
            "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT_SECONDS", "DB_CONNECT_TIMEOUT_SECONDS",
            "DB_STATEMENT_TIMEOUT_MS", "REDIS_SOCKET_TIMEOUT_SECONDS", "CACHE_TTL_SECONDS",
            "CACHE_RETRY_AFTER_SECONDS", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
            "REDIS_PASSWORD", "METRICS_ENABLED",
        }
    }  # fmt: skip
    return {
        **passthrough,
        "API_HOST": topology.host,
        "API_PORT": str(topology.api_ports[replica - 1]),
        "REPLICA_NAME": f"api-{replica}",
        "POSTGRES_HOST": topology.host,
        "POSTGRES_PORT": str(topology.ports["postgres"]),
        "REDIS_HOST": topology.host,
        "REDIS_PORT": str(topology.ports["redis"]),
    }


def programs(
    topology: Topology, env: Mapping[str, str], dirs: StackDirs, *, as_root: bool
) -> list[Program]:
    bindir = postgres_bindir()
    grace = int(env.get("SHUTDOWN_GRACE_SECONDS", "20"))
    nginx_dir = dirs.run / "nginx"
    postgres_dsn = (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@{topology.host}:"
        f"{topology.ports['postgres']}/{env['POSTGRES_DB']}?sslmode=disable"
    )
    result = [
        Program(
            "postgres",
            [
                str(bindir / "postgres"),
                "-D",
                str(dirs.postgres / "data"),
                "-p",
                str(topology.ports["postgres"]),
                "-c",
                f"listen_addresses={topology.host}",
                "-k",
                str(dirs.postgres),
                "-c",
                "max_connections=200",
            ],
            user="postgres" if as_root else None,
            # SIGINT is PostgreSQL's "fast" shutdown: roll back clients, checkpoint, exit.
            stopsignal="INT",
            stopwaitsecs=30,
        ),
        Program(
            "redis",
            [
                "redis-server",
                str(REDIS_CONFIG),
                "--port",
                str(topology.ports["redis"]),
                "--bind",
                topology.host,
                "--requirepass",
                env["REDIS_PASSWORD"],
                "--dir",
                str(dirs.root),
                "--daemonize",
                "no",
            ],
        ),
    ]
    for replica in range(1, topology.replicas + 1):
        result.append(
            Program(
                f"api-{replica}",
                [sys.executable, "-m", "app"],
                directory=API_DIR,
                environment=api_environment(topology, env, replica),
                stopwaitsecs=grace + 5,
                startsecs=2,
            )
        )
    result += [
        Program("nginx", nginx_command(nginx_dir), stopsignal="QUIT", stopwaitsecs=grace + 5),
        Program(
            "nginx-exporter",
            [
                "prometheus-nginx-exporter",
                "-nginx.scrape-uri",
                f"{topology.url('nginx-internal')}/stub_status",
                "-web.listen-address",
                topology.address("nginx-exporter"),
            ],
        ),
        Program(
            "redis-exporter",
            [
                "prometheus-redis-exporter",
                "-redis.addr",
                f"redis://{topology.address('redis')}",
                "-web.listen-address",
                topology.address("redis-exporter"),
            ],
            environment={"REDIS_PASSWORD": env["REDIS_PASSWORD"]},
        ),
        Program(
            "postgres-exporter",
            [
                "prometheus-postgres-exporter",
                f"--web.listen-address={topology.address('postgres-exporter')}",
            ],
            environment={"DATA_SOURCE_NAME": postgres_dsn},
        ),
        Program(
            "node-exporter",
            [
                "prometheus-node-exporter",
                f"--web.listen-address={topology.address('node-exporter')}",
            ],
        ),
        Program(
            "pushgateway",
            [
                "prometheus-pushgateway",
                f"--web.listen-address={topology.address('pushgateway')}",
                # Pushed groups live for one load test (it deletes its group at the end); Debian's
                # default would persist them under /var/lib/prometheus, outside the stack's data.
                "--persistence.file=",
            ],
        ),
        Program(
            "prometheus",
            [
                "prometheus",
                f"--config.file={dirs.run / 'prometheus.yml'}",
                f"--storage.tsdb.path={dirs.prometheus}",
                "--storage.tsdb.retention.time=15d",
                f"--web.listen-address={topology.address('prometheus')}",
                "--web.enable-lifecycle",
            ],
        ),
        Program(
            "alertmanager",
            [
                "prometheus-alertmanager",
                f"--config.file={ALERTMANAGER_CONFIG}",
                f"--storage.path={dirs.alertmanager}",
                f"--web.listen-address={topology.address('alertmanager')}",
                # A single instance: no gossip port to collide with anything.
                "--cluster.listen-address=",
            ],
        ),
    ]
    return result


def render_supervisor(
    topology: Topology, env: Mapping[str, str], dirs: StackDirs, *, as_root: bool
) -> Path:
    progs = programs(topology, env, dirs, as_root=as_root)
    api_names = ",".join(p.name for p in progs if p.name.startswith("api-"))
    header = f"""; Rendered by native/render.py; `make up` rewrites it. Holds secrets: mode 0600.
[unix_http_server]
file={dirs.run / "supervisor.sock"}
chmod=0700

[supervisord]
logfile={dirs.logs / "supervisord.log"}
pidfile={dirs.run / "supervisord.pid"}
childlogdir={dirs.logs}
nodaemon=false
minfds=8192

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{dirs.run / "supervisor.sock"}

[group:api]
programs={api_names}
"""
    body = "\n".join(p.section(dirs.logs) for p in progs)
    target = dirs.supervisor_conf
    target.write_text(header + "\n" + body)
    target.chmod(0o600)
    return target


def render_all(
    topology: Topology, env: Mapping[str, str], dirs: StackDirs, *, as_root: bool
) -> None:
    for folder in (dirs.run, dirs.logs, dirs.prometheus, dirs.alertmanager):
        folder.mkdir(parents=True, exist_ok=True)
    render_nginx(
        dirs.run / "nginx",
        topology.api_addresses,
        topology.ports["nginx"],
        topology.ports["nginx-internal"],
        listen_host=topology.host,
        internal_listen_host=topology.host,
        access_log="/dev/stdout",
        rate=env.get("NGINX_RATE_LIMIT", "1000r/s"),
    )
    render_prometheus(topology, dirs)
    render_supervisor(topology, env, dirs, as_root=as_root)
