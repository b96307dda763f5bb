"""`python -m loadtest` (make loadtest) against the session's native stack: one short run that
must fail, and the verdict that says why.

Impossible thresholds, a data set whose ids do not exist, and nginx frozen for most of the run:
the run fails, names each breach, and counts the unexpected 404s as failures while the provoked
4xx stay successes.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Callable

import pytest

from stack.ephemeral import EphemeralStack
from stack.testing.loadtest_runs import IMPOSSIBLE, WEIGHTS, Run, loadtest
from stack.testing.processes import children, frozen

pytestmark = pytest.mark.native_only(
    reason="it drives python -m loadtest from this machine, each user from its own loopback "
    "address; under Compose `make loadtest` runs Locust as containers (test_compose_replicas.py)"
)


def nginx_frozen(stack: EphemeralStack, after: float, seconds: float) -> Callable[[], None]:
    """nginx's master and workers SIGSTOPped for a while, then resumed: a stack that cannot keep
    up, as its clients see it. The master's pid is looked up now: supervisorctl takes a second or
    more on a busy machine.

    Not the replicas: a replica resumed after a stop runs the timers that expired meanwhile (the
    2 s wait for a pool slot, Redis's socket timeouts) before it reads the answers already
    waiting, so a request that had its answer got a 503 by chance, a server 5xx in 1 run of 3.
    Stopping nginx keeps the requests in the sockets' buffers: no replica sees them until it
    resumes, so the server's side answers everything it gets as usual. nginx then handles the
    ready I/O before it expires any timer, and its proxy and client timeouts (10 s and up)
    outlast the freeze anyway: the users only wait."""
    master = stack.pid("nginx")
    assert master, "nginx is not running"
    assert children(master), "nginx has no workers: stopping its master would stop nothing"

    def freeze() -> None:
        time.sleep(after)
        with frozen(master, with_children=True):
            time.sleep(seconds)

    return freeze


@pytest.fixture(scope="module")
def failing(live_stack: EphemeralStack, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("loadtest-fail")
    (tmp / "impossible.toml").write_text(IMPOSSIBLE)
    # Ids the API never handed out: every read the scenario expects to succeed gets a 404.
    vanished = {"item_ids": list(range(10**14, 10**14 + 50)), "user_ids": [10**14, 10**14 + 1]}
    (tmp / "seed.json").write_text(json.dumps(vanished))
    return loadtest(
        live_stack,
        tmp / "reports",
        "run",
        "--users=6",
        "--spawn-rate=6",
        "--duration=10s",
        "--workers=1",
        f"--seed-file={tmp / 'seed.json'}",
        f"--thresholds={tmp / 'impossible.toml'}",
        *WEIGHTS,
        # Most of the run: the users miss what they offer meanwhile. However late the last user
        # starts on a busy machine, most of the stretch after it is frozen.
        during=nginx_frozen(live_stack, after=1.5, seconds=6),
    )


def test_impossible_thresholds_fail_the_run_and_name_each_breach(failing: Run) -> None:
    assert failing.returncode == 1, failing.output
    output = failing.output
    for breach in (
        r"FAIL client read p95: [\d.,]+ ms > 0\.001 ms \(over by",
        r"FAIL server read p95: [\d.,]+ ms > 0\.001 ms \(over by",
        # nginx was frozen for half the run: the users missed what they offered, and the
        # replicas never saw it.
        r"FAIL client throughput \(95% of [\d.,]+ req/s offered\): [\d.,]+ req/s < [\d.,]+ "
        r"req/s \(short by",
        r"FAIL server throughput \(95% of [\d.,]+ req/s offered\): [\d.,]+ req/s < ",
        r"FAIL client error ratio: [\d.]+% > 0\.00%",
    ):
        assert re.search(breach, output), f"{breach} not in:\n{output}"
    assert "FAIL: report in" in output
    assert failing.results["verdict"] == "FAIL"
    assert (
        (failing.folder / "summary.md")
        .read_text()
        .startswith(f"# Load test {failing.folder.name}: FAIL")
    )


def test_unexpected_4xx_are_failures(failing: Run) -> None:
    entries = failing.entries()
    reads = entries["GET /items/{item_id}"]
    assert reads["num_requests"] > 0
    assert reads["num_failures"] == reads["num_requests"]
    with (failing.folder / "locust_failures.csv").open() as file:
        errors = {(row["Name"], row["Error"]) for row in csv.DictReader(file)}
    assert any(n == "/items/{item_id}" and "expected 200, got 404" in e for n, e in errors), errors
    # The provoked ones are still right, and the server saw no 5xx: only the client can tell.
    provoked = [e for key, e in entries.items() if "(unknown id)" in key]
    assert provoked
    assert all(e["num_failures"] == 0 for e in provoked)
    assert failing.results["server"]["failures"] == 0
