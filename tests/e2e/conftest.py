"""The native stack, started by the tests on free loopback ports in a throwaway data folder."""

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from native.ephemeral import EphemeralStack

REPLICAS = 3


class NativeStack(EphemeralStack):
    def wait_for(self, promql: str, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql} never satisfied the check; last result: {result}")


@pytest.fixture(scope="session")
def native_stack() -> Iterator[NativeStack]:
    with tempfile.TemporaryDirectory(prefix="native-stack-") as tmp:
        stack = NativeStack.prepare(
            Path(tmp),
            REPLICAS,
            # Fast scrapes so the checks see series within seconds.
            NATIVE_SCRAPE_INTERVAL="1s",
            # All test traffic comes from 127.0.0.1; the rate-limit test runs its own nginx.
            NGINX_RATE_LIMIT="100000r/s",
            SHUTDOWN_GRACE_SECONDS="5",
        )
        started = stack.run("up")
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            yield stack
        finally:
            stack.run("down")
