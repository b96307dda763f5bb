"""Throwaway PostgreSQL and Redis servers on loopback, for tests and local development.

PostgreSQL refuses to run as root, so as root its commands run as the `postgres` user (which
Debian's postgresql package creates); the data folder must then be reachable by that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stack.paths import API_DIR
from stack.procs import ServerError, free_port, wait_for_port


def postgres_bindir() -> Path:
    """Debian keeps server binaries off PATH, under /usr/lib/postgresql/<major>/bin."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ServerError("PostgreSQL server binaries not found: apt-get install postgresql")


def _as_postgres_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    user: str = "app"
    # Random per server: a throwaway cluster still never gets a guessable password.
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    database: str = "app"
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        result = subprocess.run(
            _as_postgres_user(argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={**os.environ, **(env or {})},
        )
        if result.returncode != 0:
            raise ServerError(f"{argv[0]} failed: {result.stdout}\n{result.stderr}")

    def init(self) -> None:
        bindir = postgres_bindir()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir.parent, "postgres", "postgres")
        pwfile = self.data_dir.parent / f"{self.data_dir.name}.pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", self.user,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self, timeout: float = 30.0) -> None:
        bindir = postgres_bindir()
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-k {self.data_dir}",
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-o", options, "-l",
             str(self.log_file), "-w", "-t", str(int(timeout)), "start"]
        )  # fmt: skip
        wait_for_port(self.port, timeout)

    def create_database(self) -> None:
        bindir = postgres_bindir()
        self._run(
            [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{self.database}"'],
            env={"PGPASSWORD": self.password},
        )  # fmt: skip

    def stop(self) -> None:
        bindir = postgres_bindir()
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def is_running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()


@dataclass
class RedisServer:
    port: int
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError("redis-server not found: apt-get install redis-server")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@dataclass
class Servers:
    """A PostgreSQL and a Redis for the API: throwaway ones, or the caller's (then both None)."""

    database_url: str
    redis_url: str
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None


@contextlib.contextmanager
def throwaway_servers(
    database_url: str | None = None, redis_url: str | None = None
) -> Iterator[Servers]:
    """A fresh PostgreSQL cluster and Redis on free loopback ports, unless URLs are given."""
    with tempfile.TemporaryDirectory(prefix="api-servers-") as tmp:
        postgres = redis = None
        try:
            if not database_url:
                # As root PostgreSQL runs as its own user, which must reach its data folder.
                os.chmod(tmp, 0o755)  # noqa: S103
                postgres = PostgresServer(Path(tmp) / "pg" / "data", free_port())
                postgres.init()
                postgres.start()
                postgres.create_database()
            if not redis_url:
                redis = RedisServer(free_port())
                redis.start()
            yield Servers(
                database_url=database_url or postgres.url,  # type: ignore[union-attr]
                redis_url=redis_url or redis.url,  # type: ignore[union-attr]
                postgres=postgres,
                redis=redis,
            )
        finally:
            if redis is not None:
                redis.stop()
            if postgres is not None and postgres.is_running():
                postgres.stop()


def migrate(database_url: str) -> None:
    """Apply the migrations the way deployments do: `alembic upgrade head` in a process."""
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(API_DIR / "alembic.ini"), "upgrade", "head"],
        cwd=API_DIR,
        env={**os.environ, "DATABASE_URL": database_url},
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextlib.contextmanager
def api_process(
    servers: Servers,
    replica_name: str,
    grace_seconds: int = 10,
    environment: Mapping[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The real entry point, `python -m app`, on a free port: yields the process (stderr piped:
    its JSON log) and its port; killed if still running at the end."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "REPLICA_NAME": replica_name,
        "SHUTDOWN_GRACE_SECONDS": str(grace_seconds),
        **(environment or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=API_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
