"""supervisord's configuration for the native stack: one program per Compose service replica.

Only addresses and paths differ from Compose: nginx.conf, the Prometheus rules, the Alertmanager
config and redis.conf are the very files Compose mounts.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stack.config.nginx import nginx_command
from stack.native.dirs import StackDirs
from stack.paths import ALERTMANAGER_DIR, API_DIR, BLACKBOX_CONFIG, REDIS_CONFIG
from stack.servers import postgres_bindir
from stack.topology import Topology

# The settings of .env that each replica reads (names from services/api/app/config.py).
API_SETTINGS = frozenset({
    "APP_ENV", "LOG_LEVEL", "DOCS_ENABLED", "SHUTDOWN_GRACE_SECONDS", "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT_SECONDS", "DB_CONNECT_TIMEOUT_SECONDS",
    "DB_STATEMENT_TIMEOUT_MS", "REDIS_SOCKET_TIMEOUT_SECONDS", "CACHE_TTL_SECONDS",
    "CACHE_RETRY_AFTER_SECONDS", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
    "REDIS_PASSWORD", "METRICS_ENABLED", "REQUEST_BODY_TIMEOUT_SECONDS",
    "IDEMPOTENCY_KEY_TTL_SECONDS",
    "IDEMPOTENCY_CLEANUP_INTERVAL_SECONDS",
})  # fmt: skip


# Files the stack creates are not readable by other local users: logs 0640, directories 0750.
LOG_UMASK = 0o027


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
    # stderr to <name>.error.log instead of into <name>.log, for a program whose stdout is a
    # machine-readable stream of its own (nginx's JSON access log).
    separate_stderr: bool = False

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
            f"stdout_logfile={logs / self.name}.log",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
        if self.separate_stderr:
            lines += [
                "redirect_stderr=false",
                f"stderr_logfile={logs / self.name}.error.log",
                "stderr_logfile_maxbytes=20MB",
                "stderr_logfile_backups=2",
            ]
        else:
            lines.append("redirect_stderr=true")
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
    return {
        **{key: value for key, value in env.items() if key in API_SETTINGS},
        "API_HOST": topology.host,
        "API_PORT": str(topology.api_ports[replica - 1]),
        "REPLICA_NAME": f"api-{replica}",
        "API_REPLICAS": str(topology.replicas),
        "POSTGRES_HOST": topology.host,
        "POSTGRES_PORT": str(topology.ports["postgres"]),
        "REDIS_HOST": topology.host,
        "REDIS_PORT": str(topology.ports["redis"]),
    }


def _datastores(
    topology: Topology, env: Mapping[str, str], dirs: StackDirs, *, as_root: bool
) -> list[Program]:
    postgres = Program(
        "postgres",
        [
            str(postgres_bindir() / "postgres"),
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
    )
    redis = Program(
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
    )
    return [postgres, redis]


def _replicas(topology: Topology, env: Mapping[str, str]) -> list[Program]:
    grace = int(env.get("SHUTDOWN_GRACE_SECONDS", "20"))
    return [
        Program(
            f"api-{replica}",
            [sys.executable, "-m", "app"],
            directory=API_DIR,
            environment=api_environment(topology, env, replica),
            stopwaitsecs=grace + 5,
            startsecs=2,
        )
        for replica in range(1, topology.replicas + 1)
    ]


def _exporters(topology: Topology, env: Mapping[str, str]) -> list[Program]:
    postgres_dsn = (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@{topology.host}:"
        f"{topology.ports['postgres']}/{env['POSTGRES_DB']}?sslmode=disable"
    )

    def listen(service: str) -> str:
        return topology.address(service)

    return [
        Program(
            "nginx-exporter",
            [
                "prometheus-nginx-exporter",
                "-nginx.scrape-uri",
                f"{topology.url('nginx-internal')}/stub_status",
                "-web.listen-address",
                listen("nginx-exporter"),
            ],
        ),
        Program(
            "redis-exporter",
            [
                "prometheus-redis-exporter",
                "-redis.addr",
                f"redis://{listen('redis')}",
                "-web.listen-address",
                listen("redis-exporter"),
            ],
            environment={"REDIS_PASSWORD": env["REDIS_PASSWORD"]},
        ),
        Program(
            "postgres-exporter",
            ["prometheus-postgres-exporter", f"--web.listen-address={listen('postgres-exporter')}"],
            environment={"DATA_SOURCE_NAME": postgres_dsn},
        ),
        Program(
            "node-exporter",
            ["prometheus-node-exporter", f"--web.listen-address={listen('node-exporter')}"],
        ),
        Program(
            "blackbox-exporter",
            [
                "prometheus-blackbox-exporter",
                f"--config.file={BLACKBOX_CONFIG}",
                f"--web.listen-address={listen('blackbox-exporter')}",
            ],
        ),
    ]


def _monitoring(topology: Topology, env: Mapping[str, str], dirs: StackDirs) -> list[Program]:
    return [
        Program(
            "pushgateway",
            [
                "prometheus-pushgateway",
                f"--web.listen-address={topology.address('pushgateway')}",
                # Pushed groups live for one load test (it deletes its group at the end); Debian's
                # default would persist them under /var/lib/prometheus, outside the stack's data.
                "--persistence.file=",
                f"--web.config.file={dirs.web_config}",
            ],
        ),
        Program(
            "prometheus",
            [
                "prometheus",
                f"--config.file={dirs.run / 'prometheus.yml'}",
                f"--storage.tsdb.path={dirs.prometheus}",
                # At least the SLOs' 30-day window, and a size cap that alerts before it bites
                # (StackPrometheusStorageNearRetentionSize).
                f"--storage.tsdb.retention.time={env.get('PROMETHEUS_RETENTION', '31d')}",
                f"--storage.tsdb.retention.size={env.get('PROMETHEUS_RETENTION_SIZE', '10GB')}",
                f"--web.listen-address={topology.address('prometheus')}",
                # Basic auth on every endpoint. No --web.enable-lifecycle: nobody stops or
                # reloads Prometheus over HTTP, not even with the password (`make reload` sends
                # SIGHUP).
                f"--web.config.file={dirs.web_config}",
            ],
        ),
        Program(
            "alertmanager",
            [
                # The same entrypoint as Compose's: it renders the config with the receiver URL
                # from the environment into the run folder, then execs Alertmanager.
                "sh",
                str(ALERTMANAGER_DIR / "entrypoint.sh"),
                str(dirs.run / "alertmanager.yml"),
                "prometheus-alertmanager",
                f"--storage.path={dirs.alertmanager}",
                f"--web.listen-address={topology.address('alertmanager')}",
                # A single instance: no gossip port to collide with anything.
                "--cluster.listen-address=",
                f"--web.config.file={dirs.web_config}",
            ],
            environment={
                name: env[name] for name in ("ALERTMANAGER_CRITICAL_WEBHOOK_URL",) if name in env
            },
        ),
    ]


def programs(
    topology: Topology, env: Mapping[str, str], dirs: StackDirs, *, as_root: bool
) -> list[Program]:
    grace = int(env.get("SHUTDOWN_GRACE_SECONDS", "20"))
    nginx = Program(
        "nginx",
        nginx_command(dirs.nginx),
        stopsignal="QUIT",
        stopwaitsecs=grace + 5,
        separate_stderr=True,
    )
    return [
        *_datastores(topology, env, dirs, as_root=as_root),
        *_replicas(topology, env),
        nginx,
        *_exporters(topology, env),
        *_monitoring(topology, env, dirs),
    ]


def render_supervisor(
    topology: Topology, env: Mapping[str, str], dirs: StackDirs, *, as_root: bool
) -> Path:
    progs = programs(topology, env, dirs, as_root=as_root)
    api_names = ",".join(p.name for p in progs if p.name.startswith("api-"))
    header = f"""; Rendered by stack/config/supervisor.py on `make up`. Holds secrets: mode 0600.
[unix_http_server]
file={dirs.run / "supervisor.sock"}
chmod=0700

[supervisord]
logfile={dirs.logs / "supervisord.log"}
pidfile={dirs.run / "supervisord.pid"}
childlogdir={dirs.logs}
nodaemon=false
minfds=8192
; Logs are 0640 (request paths, errors that quote request lines): supervisord creates the
; programs' log files, and every program inherits this umask.
umask={LOG_UMASK:03o}

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
