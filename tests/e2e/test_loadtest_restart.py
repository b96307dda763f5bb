"""`python -m loadtest` right after the replicas and Prometheus restarted, with 5xx in its window:
the client's, nginx's and the server's counts agree exactly.

It restarts the replicas and Prometheus and ends with every replica back in nginx's pool, so no
other module cares whether it ran before (each judges only the lines and samples of its own runs).
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack.ephemeral import EphemeralStack
from stack.testing.loadtest_runs import WEIGHTS, loadtest

pytestmark = pytest.mark.native_only(
    reason="it drives python -m loadtest from this machine, each user from its own loopback "
    "address; under Compose `make loadtest` runs Locust as containers (test_compose_replicas.py)"
)


def _nginx_load_lines(stack: EphemeralStack, since: float) -> list[dict[str, Any]]:
    """nginx's access log lines since `since` from the simulated users (each binds its own
    127.x.y.z; seeding and the tests' own requests come from 127.0.0.1). supervisord rotates the
    log at 20 MB, so the previous file is read too."""
    logs = stack.data_dir / "stack" / "logs"
    text = "".join(
        (logs / name).read_text(errors="replace")
        for name in ("nginx.log.1", "nginx.log")
        if (logs / name).exists()
    )
    records = [json.loads(line) for line in text.splitlines() if line.startswith('{"time"')]
    return [
        r
        for r in records
        if r["remote_addr"] != "127.0.0.1"
        and datetime.fromisoformat(r["time"]).timestamp() >= math.floor(since)
    ]


def test_client_nginx_and_server_agree_right_after_a_restart(
    live_stack: EphemeralStack, tmp_path: Path
) -> None:
    """The issue's case: the replicas and Prometheus restarted minutes after the old processes
    counted the same series, and 5xx during the window. Every count must agree exactly."""
    stack = live_stack
    # The old processes count a few 503s on the route the users read most: series the new
    # processes only create during the window, so a baseline that reads the old values (still
    # within Prometheus's 5-minute lookback) would subtract them.
    assert "stopped" in stack.supervisorctl("stop", "postgres")
    with httpx.Client(base_url=stack.nginx, timeout=20) as http:
        old = [http.get(f"/items/{10**14 + n}").status_code for n in range(12)]
    assert "started" in stack.supervisorctl("start", "postgres")
    assert old == [503] * 12
    stack.wait_for(
        'sum(http_requests_total{job="api", status="503"})', lambda r: float(r[0]["value"][1]) >= 12
    )
    # Prometheus down first, so it writes no staleness marker for the old series; then new
    # replica processes; then Prometheus again, as after `make down` and `make up`.
    assert "stopped" in stack.supervisorctl("stop", "prometheus")
    stack.supervisorctl("restart", "api:*")
    assert "started" in stack.supervisorctl("start", "prometheus")
    stack.wait_for_full_pool()

    def database_away() -> None:
        """5xx in the window: PostgreSQL goes away for a few seconds under load."""
        time.sleep(2)
        assert "stopped" in stack.supervisorctl("stop", "postgres")
        time.sleep(3)
        assert "started" in stack.supervisorctl("start", "postgres")

    since = time.time()
    knobs = ("--users=8", "--spawn-rate=8", "--duration=12s", "--workers=1", "--items=200")
    run = loadtest(
        stack, tmp_path / "reports", "run", *knobs, "--owners=4", *WEIGHTS, during=database_away
    )
    results = run.results
    client, server = results["client"], results["server"]
    time.sleep(1.5)  # nginx flushes its access log buffer every second
    lines = _nginx_load_lines(stack, since)
    nginx_statuses: dict[str, int] = {}
    for line in lines:
        nginx_statuses[str(line["status"])] = nginx_statuses.get(str(line["status"]), 0) + 1
    nginx_5xx = sum(n for status, n in nginx_statuses.items() if status.startswith("5"))
    assert nginx_5xx > 0, (nginx_statuses, run.output)
    counts = {
        "client": (client["requests"], client["failures"]),
        "nginx": (len(lines), nginx_5xx),
        "server": (server["requests"], server["failures"]),
        "1-s reads": (results["server_extras"]["sampled_requests"], None),
    }
    assert counts["client"] == counts["nginx"] == counts["server"], (counts, run.output)
    assert counts["1-s reads"][0] == server["requests"], counts
    assert results["server_extras"]["statuses"] == nginx_statuses
    stack.wait_for_full_pool()
