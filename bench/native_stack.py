"""The native stack under test: `stack.ephemeral`'s throwaway stack on free ports, plus what the
benchmark reads from it (the pids whose CPU it counts, the cache counters) and does to it
(METRICS_ENABLED per replica, an emptied cache).

Not bench/stack.py: Locust imports bench/fixed_rate.py with bench/ first on sys.path, where a
`stack` module would hide the `stack` package.
"""

# ruff: noqa: S310 - loopback URLs built here
from __future__ import annotations

import contextlib
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import redis

from bench.ceilings import wait_http
from bench.config import BenchError
from bench.procs import Group
from stack.ephemeral import EphemeralStack
from stack.native.dirs import StackDirs
from stack.native.runner import supervisord_pid
from stack.topology import HOST


class BenchStack(EphemeralStack):
    def native(self, command: str) -> None:
        result = self.run(command)
        if result.returncode != 0:
            raise BenchError(f"stack.native {command} failed:\n{result.stdout}{result.stderr}")

    @property
    def dirs(self) -> StackDirs:
        return StackDirs(self.data_dir / "stack")

    def pids(self) -> dict[str, int]:
        """Every running program's pid by its name ("api-1", "nginx"), and supervisord's."""
        status = self.supervisorctl("status")
        found = {
            m[1].split(":")[-1]: int(m[2])
            for m in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+)", status, re.MULTILINE)
        }
        supervisord = supervisord_pid(self.dirs)
        if supervisord is None:
            raise BenchError(f"supervisord of {self.data_dir} is not running")
        found["supervisord"] = supervisord
        return found

    def api_pids(self) -> list[int]:
        return [pid for name, pid in sorted(self.pids().items()) if name.startswith("api-")]

    def groups(self) -> list[Group]:
        pids = self.pids()
        return [
            Group("api", self.api_pids()),
            Group("nginx", [pids["nginx"]]),
            Group("postgres", [pids["postgres"]]),
            Group("redis", [pids["redis"]]),
            Group("supervisord", [pids["supervisord"]], with_children=False),
        ]

    def cache_lookups(self) -> dict[str, float]:
        """api_cache_lookups_total summed over the replicas, read from each one directly."""
        totals: dict[str, float] = {}
        for replica in range(1, self.topology.replicas + 1):
            with urllib.request.urlopen(f"{self.replica_url(replica)}/metrics", timeout=5) as r:
                text = r.read().decode()
            for m in re.finditer(r'^api_cache_lookups_total\{result="(\w+)"\} (\S+)$', text, re.M):
                totals[m[1]] = totals.get(m[1], 0.0) + float(m[2])
        return totals

    def set_metrics(self, enabled: list[bool]) -> None:
        """Restart the replicas with METRICS_ENABLED set per replica (the stack's own copy of
        supervisord.conf is edited; nothing else is touched) and wait until they are ready."""
        conf = self.dirs.supervisor_conf
        text = conf.read_text()
        for replica, on in enumerate(enabled, start=1):
            start = text.index(f"[program:api-{replica}]")
            end = text.find("\n[", start + 1) % (len(text) + 1)
            section = re.sub(r'METRICS_ENABLED="\w+"', f'METRICS_ENABLED="{str(on).lower()}"',
                             text[start:end])  # fmt: skip
            text = text[:start] + section + text[end:]
        conf.write_text(text)
        # update re-creates the changed group; its programs do not autostart (stack.native
        # starts them in dependency order), hence the start.
        for command in (["reread"], ["update"], ["start", "api:*"]):
            self.supervisorctl(*command)
        for replica in range(1, self.topology.replicas + 1):
            wait_http(f"{self.replica_url(replica)}/health/ready", timeout=60)

    def flush_cache(self) -> None:
        client = redis.Redis(
            host=HOST,
            port=self.topology.ports["redis"],
            password=self.secret("REDIS_PASSWORD"),
            socket_timeout=5,
        )
        try:
            client.flushdb()
        finally:
            client.close()


@contextlib.contextmanager
def native_stack(folder: Path, replicas: int) -> Iterator[BenchStack]:
    """`stack.native up` in `folder` (inside the run's own temporary folder), `down` at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    # PostgreSQL runs as its own user, which must pass through the run's folder to reach its data.
    folder.parent.chmod(0o755)
    stack = BenchStack.prepare(
        folder,
        replicas,
        # Every request comes from 127.0.0.1: the per-address limits would measure themselves.
        # Locust's capacity run at 1.5x wrk's rate keeps ~150 requests in progress: at the
        # default 100 most of the cached run's answers were nginx's 429s (2026-12-01).
        NGINX_RATE_LIMIT="1000000r/s",
        NGINX_CONN_LIMIT="10000",
        SHUTDOWN_GRACE_SECONDS="5",
        METRICS_ENABLED="true",
    )
    try:
        stack.native("up")
        yield stack
    finally:
        with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
            stack.native("down")
