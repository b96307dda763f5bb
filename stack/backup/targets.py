"""Where backups come from and go to: the native stack's PostgreSQL, or Compose's.

Each target can dump, check an archive by reading all of it, fence the writers (stop the API
replicas), restore in one transaction, bring the schema to the code's head, clear the cache and
let the writers back in.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stack.backup.archive import BackupError
from stack.native import runner
from stack.native.dirs import StackDirs
from stack.servers import postgres_bindir
from stack.topology import Topology

# pg_restore into the database: drop what the archive holds first (--clean, which --if-exists
# keeps quiet on an empty database), all in one transaction, so a failure leaves the old data.
RESTORE_FLAGS = ("--clean", "--if-exists", "--single-transaction", "--no-owner", "--exit-on-error")
WAIT_SECONDS = 180


class Target(Protocol):
    def dump(self, out: Path) -> None: ...
    def validate(self, archive: Path) -> None: ...
    def fence(self) -> None: ...
    def restore(self, archive: Path) -> None: ...
    def migrate(self) -> None: ...
    def clear_cache(self) -> None: ...
    def unfence(self) -> None: ...


def _checked(result: subprocess.CompletedProcess[bytes], what: str) -> None:
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()[-2000:]
        raise BackupError(f"{what} failed (exit {result.returncode}): {detail}")


@dataclass
class NativeTarget:
    env: dict[str, str]
    topology: Topology
    dirs: StackDirs

    def _pg(self, tool: str, *args: str, stdin: Path | None = None) -> None:
        if runner.supervisord_pid(self.dirs) is None:
            raise BackupError("the native stack is not running; start it with `make up`")
        argv = [
            str(postgres_bindir() / tool),
            f"--host={self.topology.host}",
            f"--port={self.topology.ports['postgres']}",
            f"--username={self.env['POSTGRES_USER']}",
            f"--dbname={self.env['POSTGRES_DB']}",
            *args,
        ]
        # The password through the environment, never on a command line other users can read.
        environment = {"PGPASSWORD": self.env["POSTGRES_PASSWORD"], "PATH": "/usr/bin:/bin"}
        with (stdin or Path("/dev/null")).open("rb") as source:
            result = subprocess.run(
                argv, stdin=source, capture_output=True, env=environment, check=False, timeout=3600
            )
        _checked(result, tool)

    def dump(self, out: Path) -> None:
        self._pg("pg_dump", "--format=custom", f"--file={out}")

    def validate(self, archive: Path) -> None:
        # Reading every block (to /dev/null) finds a truncated or damaged archive before any
        # table is dropped; --list alone reads only the table of contents.
        result = subprocess.run(
            [str(postgres_bindir() / "pg_restore"), "--file=/dev/null", str(archive)],
            capture_output=True,
            check=False,
            timeout=3600,
        )
        _checked(result, f"reading {archive.name}")

    def fence(self) -> None:
        runner.stop_replicas(self.dirs)

    def restore(self, archive: Path) -> None:
        self._pg("pg_restore", *RESTORE_FLAGS, str(archive))

    def migrate(self) -> None:
        runner.migrate(self.topology, self.env)

    def clear_cache(self) -> None:
        result = subprocess.run(
            ["redis-cli", "-h", self.topology.host, "-p", str(self.topology.ports["redis"]),
             "FLUSHDB"],
            capture_output=True,
            env={"REDISCLI_AUTH": self.env["REDIS_PASSWORD"], "PATH": "/usr/bin:/bin"},
            check=False,
            timeout=60,
        )  # fmt: skip
        _checked(result, "FLUSHDB")
        if result.stdout.strip() != b"OK":
            raise BackupError(f"FLUSHDB answered {result.stdout!r}")

    def unfence(self) -> None:
        runner.start_replicas(self.topology, self.dirs)
        runner.wait_for_entry(self.topology, self.dirs)


@dataclass
class ComposeTarget:
    """The running Compose project (the same `docker compose` the Makefile uses)."""

    # nginx's public entry on the host, e.g. http://127.0.0.1:8080: unfence waits until it serves.
    entry: str
    compose: Sequence[str] = field(default_factory=lambda: ("docker", "compose"))

    def _run(
        self, *args: str, stdin: Path | None = None, stdout: Path | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        with (stdin or Path("/dev/null")).open("rb") as source:
            sink = stdout.open("wb") if stdout else None
            try:
                return subprocess.run(
                    [*self.compose, *args],
                    stdin=source,
                    stdout=sink or subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                    timeout=3600,
                )
            finally:
                if sink:
                    sink.close()

    def _postgres(self, script: str, what: str, **io: Path) -> None:
        # The password stays inside the container: its own POSTGRES_* environment.
        login = 'PGPASSWORD="$POSTGRES_PASSWORD" exec'
        conn = '--host=127.0.0.1 --username="$POSTGRES_USER" --dbname="$POSTGRES_DB"'
        command = script.format(login=login, conn=conn)
        _checked(self._run("exec", "-T", "postgres", "sh", "-c", command, **io), what)

    def dump(self, out: Path) -> None:
        self._postgres("{login} pg_dump {conn} --format=custom", "pg_dump", stdout=out)

    def validate(self, archive: Path) -> None:
        self._postgres("exec pg_restore --file=/dev/null", f"reading {archive.name}", stdin=archive)

    def fence(self) -> None:
        _checked(self._run("stop", "api"), "stopping the api replicas")

    def restore(self, archive: Path) -> None:
        flags = " ".join(RESTORE_FLAGS)
        self._postgres(f"{{login}} pg_restore {{conn}} {flags}", "pg_restore", stdin=archive)

    def migrate(self) -> None:
        _checked(self._run("run", "--rm", "--no-deps", "migrate"), "migrations")

    def clear_cache(self) -> None:
        result = self._run("exec", "-T", "redis", "redis-cli", "FLUSHDB")
        _checked(result, "FLUSHDB")
        if result.stdout.strip() != b"OK":
            raise BackupError(f"FLUSHDB answered {result.stdout!r}")

    def unfence(self) -> None:
        # `start`, not `up`: it brings back exactly the replicas that were stopped (a scaled
        # service keeps its count), then every one of them must turn healthy.
        _checked(self._run("start", "api"), "starting the api replicas")
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            listed = self._run("ps", "--all", "--format", "json", "api").stdout.decode()
            states = [json.loads(line) for line in listed.splitlines() if line.strip()]
            if states and all(s.get("Health") == "healthy" for s in states):
                break
            time.sleep(1)
        else:
            raise BackupError(f"the api replicas were not healthy within {WAIT_SECONDS} s")
        # nginx keeps replicas that failed out of its pool for fail_timeout (10 s): the restore
        # is over when the public entry serves again, ten answers in a row.
        while time.monotonic() < deadline:
            if all(_serves(f"{self.entry}/health/live") for _ in range(10)):
                return
            time.sleep(0.5)
        raise BackupError(f"nginx did not serve again within {WAIT_SECONDS} s")


def _serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own entry
            return bool(response.status == 200)
    except OSError:
        return False
