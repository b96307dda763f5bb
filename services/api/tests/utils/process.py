"""The real entry point, `python -m app`, as a process of its own on a free port."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from native.servers import free_port, wait_for_port
from tests.conftest import Servers

API_DIR = Path(__file__).resolve().parents[2]


@contextmanager
def api_process(
    servers: Servers, replica_name: str, grace_seconds: int = 10
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Yields the process (stderr piped: its JSON log) and its port; killed if still running."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "REPLICA_NAME": replica_name,
        "SHUTDOWN_GRACE_SECONDS": str(grace_seconds),
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
