"""The native stack's lifecycle: supervisord keeps every process; `up` renders its configuration,
starts the programs in dependency order (as Compose's `depends_on` conditions do) and waits for
each to be healthy; `down` stops them all."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from stack.config.nginx import nginx_command
from stack.config.supervisor import LOG_UMASK
from stack.monitoring_auth import BasicAuth
from stack.native.dirs import StackDirs
from stack.native.render import render_all
from stack.paths import API_DIR, data_root
from stack.procs import ServerError, port_open
from stack.servers import PostgresServer, postgres_bindir
from stack.tls import TlsEntry
from stack.topology import Topology

# Binary → Debian package that provides it.
DEBIAN_PACKAGES = {
    "nginx": "nginx",
    "redis-server": "redis-server",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "prometheus-nginx-exporter": "prometheus-nginx-exporter",
    "prometheus-redis-exporter": "prometheus-redis-exporter",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
}
HEALTH_TIMEOUT_SECONDS = 120.0


class StackError(RuntimeError):
    pass


def stack_dirs() -> StackDirs:
    return StackDirs(data_root() / "stack")


def _missing_packages() -> list[str]:
    missing = [pkg for binary, pkg in DEBIAN_PACKAGES.items() if shutil.which(binary) is None]
    try:
        postgres_bindir()
    except ServerError:
        missing.append("postgresql")
    return missing


def ensure_packages() -> None:
    # `make up` runs stack/system-deps.sh first; this catches a direct `python -m stack.native`.
    missing = _missing_packages()
    if missing:
        raise StackError(
            f"missing Debian packages: {' '.join(missing)}; run `make system-deps` (as root)"
        )


def _log_tail(dirs: StackDirs, program: str, lines: int = 20) -> str:
    log = dirs.logs / f"{program}.log"
    if not log.exists():
        return ""
    return f"--- last lines of {log} ---\n" + "\n".join(log.read_text().splitlines()[-lines:])


def supervisorctl(dirs: StackDirs, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(dirs.supervisor_conf), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    # supervisorctl exits non-zero when any program is not RUNNING; callers decide.
    if check and result.returncode not in (0, 3):
        failed = [line.split(":")[0] for line in result.stdout.splitlines() if "ERROR" in line]
        tails = "\n".join(_log_tail(dirs, name.split(":")[-1]) for name in failed)
        raise StackError(
            f"supervisorctl {' '.join(args)}: {result.stdout}{result.stderr}\n{tails}".rstrip()
        )
    return result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; only its parent's wait is left.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    return False


def supervisord_pid(dirs: StackDirs) -> int | None:
    pidfile = dirs.run / "supervisord.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _wait(what: str, check: Callable[[], bool], dirs: StackDirs, log: str | None) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError, ServerError):
            if check():
                return
        time.sleep(0.2)
    tail = _log_tail(dirs, log) if log else ""
    raise StackError(f"{what} not healthy after {HEALTH_TIMEOUT_SECONDS:.0f}s\n{tail}")


def _http_ok(url: str, headers: Mapping[str, str] | None = None) -> Callable[[], bool]:
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - loopback

    def check() -> bool:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)

    return check


def _ready(topology: Topology, service: str, auth: Mapping[str, str]) -> Callable[[], bool]:
    return _http_ok(f"{topology.url(service)}/-/ready", auth)


def _port_open(port: int) -> Callable[[], bool]:
    return lambda: port_open(port)


def _postgres(topology: Topology, env: Mapping[str, str], dirs: StackDirs) -> PostgresServer:
    return PostgresServer(
        dirs.postgres / "data",
        topology.ports["postgres"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        database=env["POSTGRES_DB"],
    )


def migrate(topology: Topology, env: Mapping[str, str]) -> None:
    """The one-shot `migrate` service: replicas start only after it succeeds."""
    run_env = {
        **os.environ,
        "POSTGRES_HOST": topology.host,
        "POSTGRES_PORT": str(topology.ports["postgres"]),
        "POSTGRES_USER": env["POSTGRES_USER"],
        "POSTGRES_PASSWORD": env["POSTGRES_PASSWORD"],
        "POSTGRES_DB": env["POSTGRES_DB"],
        "APP_ENV": env.get("APP_ENV", "production"),
    }
    run_env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=API_DIR,
        env=run_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        raise StackError(f"migrations failed:\n{result.stdout}{result.stderr}")


def up(env: Mapping[str, str], topology: Topology, dirs: StackDirs, tls: TlsEntry) -> None:
    """tls: the HTTPS entry, checked by stack.tls.prepare before anything here starts."""
    as_root = os.geteuid() == 0
    credential = BasicAuth.from_env(env)
    auth = credential.header if credential else {}
    dirs.root.mkdir(parents=True, exist_ok=True)
    render_all(topology, env, dirs, tls=tls, as_root=as_root)
    postgres = _postgres(topology, env, dirs)
    fresh = not (postgres.data_dir / "PG_VERSION").exists()
    if fresh:
        if as_root:
            dirs.root.chmod(0o755)
            dirs.postgres.mkdir(exist_ok=True)
            shutil.chown(dirs.postgres, "postgres", "postgres")
        postgres.init()

    if supervisord_pid(dirs) is None:
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(dirs.supervisor_conf)],
            check=True,
            timeout=30,
            # Its own log is opened before the config's umask applies (when it daemonizes).
            umask=LOG_UMASK,
        )
        _wait("supervisord", (dirs.run / "supervisor.sock").exists, dirs, "supervisord")
    else:
        # Already up: pick up a changed replica count or config, keep what did not change.
        supervisorctl(dirs, "reread")
        supervisorctl(dirs, "update")

    supervisorctl(dirs, "start", "postgres", "redis")
    bindir = postgres_bindir()
    _wait(
        "postgres",
        lambda: subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", topology.host, "-p",
             str(topology.ports["postgres"])],
            check=False,
        ).returncode == 0,
        dirs,
        "postgres",
    )  # fmt: skip
    if fresh:
        postgres.create_database()
    _wait("redis", _port_open(topology.ports["redis"]), dirs, "redis")
    migrate(topology, env)

    start_replicas(topology, dirs)
    supervisorctl(dirs, "start", "nginx")
    _wait("nginx", _http_ok(f"{topology.url('nginx-internal')}/healthz"), dirs, "nginx")
    exporters = (
        "nginx-exporter", "redis-exporter", "postgres-exporter", "node-exporter",
        "blackbox-exporter",
    )  # fmt: skip
    supervisorctl(dirs, "start", *exporters, "alertmanager")
    for name in exporters:
        _wait(name, _http_ok(f"{topology.url(name)}/metrics"), dirs, name)
    # These three answer only with the monitoring credential, /-/ready included.
    _wait("alertmanager", _ready(topology, "alertmanager", auth), dirs, "alertmanager")
    supervisorctl(dirs, "start", "pushgateway")
    _wait("pushgateway", _ready(topology, "pushgateway", auth), dirs, "pushgateway")
    supervisorctl(dirs, "start", "prometheus")
    _wait("prometheus", _ready(topology, "prometheus", auth), dirs, "prometheus")


def check_nginx(dirs: StackDirs) -> None:
    """`nginx -t` on the rendered configuration (certificate and key included)."""
    result = subprocess.run(
        nginx_command(dirs.nginx, test=True), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"nginx refuses its configuration:\n{result.stderr.strip()}")


def start_replicas(topology: Topology, dirs: StackDirs) -> None:
    """Start every API replica and wait until each is ready (it reaches PostgreSQL)."""
    supervisorctl(dirs, "start", "api:*")
    for replica, port in enumerate(topology.api_ports, start=1):
        url = f"http://{topology.host}:{port}/health/ready"
        _wait(f"api-{replica}", _http_ok(url), dirs, f"api-{replica}")


def wait_for_entry(topology: Topology, dirs: StackDirs, in_a_row: int = 10) -> None:
    """Until nginx answers through every replica again, `in_a_row` GETs in a row.

    After its replicas were all stopped nginx keeps each out of its pool for fail_timeout (10 s)
    even once it is back, answering 502 meanwhile: a restore is not over until that has passed.
    """
    url = f"{topology.url('nginx')}/health/live"

    def serving() -> bool:
        return all(_http_ok(url)() for _ in range(in_a_row))

    _wait("nginx's pool", serving, dirs, "nginx")


def stop_replicas(dirs: StackDirs) -> None:
    """Stop every API replica, each after its drain (SIGTERM, as a deploy does)."""
    supervisorctl(dirs, "stop", "api:*")


def down(dirs: StackDirs) -> None:
    pid = supervisord_pid(dirs)
    if pid is None:
        return
    # Stops every program (each with its own grace period, signals to the whole group).
    supervisorctl(dirs, "shutdown", check=False)
    # supervisord removes its pidfile before the process is gone: wait for the process itself,
    # so nothing of the stack is still running when `make down` returns.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        raise StackError(f"supervisord (pid {pid}) did not stop within 120 s")
