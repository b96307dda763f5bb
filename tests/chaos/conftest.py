"""The chaos suite's own native stack, and where its measurements go.

These runs take minutes, so `make test` leaves them out and `make chaos` (CI runs both) sets
CHAOS=1. The stack is separate from tests/e2e's: a fault here must not leave state behind for
another suite, and `make chaos` must work on its own.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from native.ephemeral import EphemeralStack

REPLICAS = 3
# Git-ignored (see .gitignore); the README's reliability table is copied from results.md.
RESULTS_DIR = Path(__file__).resolve().parent / "results"

if not os.environ.get("CHAOS"):
    collect_ignore_glob = ["test_*.py"]


class ChaosStack(EphemeralStack):
    def pid(self, program: str) -> int:
        """The pid supervisord has for a program ("api:api-2", "postgres"); 0 when not running."""
        return int(self.supervisorctl("pid", program).strip() or 0)

    def replica_url(self, replica: int) -> str:
        return f"http://{self.topology.api_addresses[replica - 1]}"

    def secret(self, key: str) -> str:
        for line in (self.data_dir / ".env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name == key:
                return value
        raise KeyError(key)

    def alerts(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/alerts", timeout=10)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()["data"]["alerts"]
        return alerts

    def served_by(self, request_ids: set[str]) -> set[str]:
        """Addresses of the replicas whose own access log shows any of these requests.

        The replicas' logs, not nginx's: a replica writes its line at the end of its loop turn,
        while nginx buffers its access log for up to a second (flush=1s).
        """
        return {
            address
            for replica, address in enumerate(self.topology.api_addresses, start=1)
            if any(rid in self.log(f"api-{replica}") for rid in request_ids)
        }

    def wait_for_full_pool(self, timeout: float = 60) -> float:
        """Until nginx sends traffic to every replica again; returns the seconds it took.

        A replica that failed stays out of nginx's pool for fail_timeout (10 s) after it is
        healthy again, so "healthy" alone does not mean "serving".
        """
        start = time.monotonic()
        expected = set(self.topology.api_addresses)
        with httpx.Client(base_url=self.nginx, timeout=10) as client:
            while time.monotonic() - start < timeout:
                ids = {f"pool-{time.monotonic_ns()}-{n}" for n in range(12)}
                for rid in ids:
                    # Answered by the API alone (422, no database or cache) and, unlike /health,
                    # written to its access log.
                    client.get("/items/0", headers={"X-Request-ID": rid})
                time.sleep(0.1)  # the replica writes its line at the end of its loop turn
                if self.served_by(ids) >= expected:
                    return time.monotonic() - start
                time.sleep(0.2)
        raise AssertionError(f"nginx did not route to every replica within {timeout:.0f}s")


@dataclass
class Results:
    """One entry per fault, written as JSON and as the README's markdown table."""

    faults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, name: str, numbers: dict[str, Any]) -> None:
        self.faults[name] = numbers
        self.write()

    def write(self) -> None:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        document = {"measured_at": stamp, "host_cpus": os.cpu_count(), "faults": self.faults}
        (RESULTS_DIR / "results.json").write_text(json.dumps(document, indent=2) + "\n")
        rows = [
            "| Fault | Requests (during fault) | Errors by status | p99 during fault | Recovery |",
            "|---|---|---|---|---|",
        ]
        for name, n in self.faults.items():
            errors = ", ".join(f"{k}: {v}" for k, v in n["errors"].items()) or "none"
            rows.append(
                f"| {name} | {n['requests']} ({n['requests_during_fault']}) | {errors} "
                f"| {n['p99_ms_during_fault']:.0f} ms | {n['recovery_seconds']:.1f} s |"
            )
        (RESULTS_DIR / "results.md").write_text(
            f"Measured {stamp} on {os.cpu_count()} CPUs by `make chaos`.\n\n"
            + "\n".join(rows)
            + "\n"
        )


@pytest.fixture(scope="session")
def results() -> Results:
    return Results()


@pytest.fixture(scope="session")
def chaos_stack() -> Iterator[ChaosStack]:
    with tempfile.TemporaryDirectory(prefix="chaos-stack-") as tmp:
        stack = ChaosStack.prepare(
            Path(tmp),
            REPLICAS,
            # Scrapes and rule evaluations every second: Prometheus sees a replica go down and an
            # alert go pending within the few seconds a restart takes.
            NATIVE_SCRAPE_INTERVAL="1s",
            # The load comes from one address; the rate limit is not what is under test here.
            NGINX_RATE_LIMIT="100000r/s",
        )
        started = stack.run("up")
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            yield stack
        finally:
            stopped = stack.run("down")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
