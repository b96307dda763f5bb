"""`python -m loadtest` (make loadtest) against the session's native stack: one short run that
must pass generous thresholds, and what it reports.

Its client and server numbers agree, the offered load is the users' schedules, the report files
are complete, requests are named by route template, the provoked 4xx count as successes, each
user has its own address, the Load test dashboard has data while it runs, and `check` judges its
folder again.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.thresholds import Thresholds
from stack.ephemeral import EphemeralStack
from stack.grafana.panel_queries import panel_queries
from stack.paths import REPO_ROOT
from stack.testing.loadtest import GENEROUS
from stack.testing.loadtest_runs import IMPOSSIBLE, WEIGHTS, Run, loadtest

pytestmark = pytest.mark.native_only(
    reason="it drives python -m loadtest from this machine, each user from its own loopback "
    "address; under Compose `make loadtest` runs Locust as containers (test_compose_replicas.py)"
)

USERS = 12
NAME = re.compile(r"^/(items|users)(/\{(item_id|user_id)\})?( \([a-zA-Z0-9 -]+\))?$")


@pytest.fixture(scope="module")
def nginx_lines_before(live_stack: EphemeralStack) -> int:
    """How long nginx's access log was before the passing run: its lines are the ones after."""
    return len(live_stack.log("nginx").splitlines())


@pytest.fixture(scope="module")
def passing(
    live_stack: EphemeralStack, tmp_path_factory: pytest.TempPathFactory, nginx_lines_before: int
) -> Run:
    tmp = tmp_path_factory.mktemp("loadtest-pass")
    (tmp / "generous.toml").write_text(GENEROUS)
    run = loadtest(
        live_stack,
        tmp / "reports",
        "run",
        f"--users={USERS}",
        f"--spawn-rate={USERS}",
        "--duration=12s",
        "--workers=2",
        "--items=300",
        "--owners=6",
        f"--thresholds={tmp / 'generous.toml'}",
        *WEIGHTS,
    )
    assert run.returncode == 0, run.output
    return run


def test_a_run_reports_client_and_server_numbers_that_agree(
    passing: Run, live_stack: EphemeralStack
) -> None:
    assert "PASS: report in" in passing.output
    results = passing.results
    client, server = results["client"], results["server"]
    assert results["verdict"] == "PASS"
    assert client["requests"] > 100
    # The window's edges are exact on the server's side: the replicas counted the same requests,
    # and nothing of the seeding; every worker's last numbers reached the client's side; the
    # load test's own 1-s reads of the replicas counted the same too.
    assert server["requests"] == client["requests"]
    assert results["server_extras"]["sampled_requests"] == server["requests"]
    for side in (client, server):
        assert side["throughput_rps"] > 10
        assert side["steady_rps"] > 10
        route = side["routes"]["GET /items/{item_id}"]
        assert route["requests"] > 0
        assert all(route["latency"][p] is not None for p in ("p50", "p95", "p99")), route
        for group in ("read", "write"):
            assert side["groups"][group]["p95"] is not None, side["groups"]
    extras = results["server_extras"]
    replicas = extras["replicas"]
    assert len(replicas) == live_stack.topology.replicas
    assert sum(r["share"] for r in replicas) == pytest.approx(1.0)
    for replica in replicas:
        assert replica["requests"] > 0
        assert replica["cpu_cores"] > 0
        assert replica["memory_peak_bytes"] > 10 * 2**20
        assert replica["pool_size"] > 0
    assert 0 < extras["cache_hit_ratio"] <= 1
    assert extras["host_cpu_busy"] > 0


def test_the_offered_load_is_the_users_schedules(passing: Run) -> None:
    """What the users offered after ramp-up is the plan give or take the Poisson draw (5 sigma),
    and what was answered is within what was offered plus the few sign-ups users make first."""
    offered = passing.results["offered"]
    window = passing.results["window"]
    planned = USERS * 4
    assert offered["planned_rps"] == planned
    # Whole seconds from the last user's start to the stop: a 12-s run keeps most of them.
    assert offered["steady_seconds"] >= 3
    assert window["start"] < window["spawned"] < window["end"] - offered["steady_seconds"]
    expected = planned * offered["steady_seconds"]
    drawn = offered["steady_rps"] * offered["steady_seconds"]
    assert abs(drawn - expected) < 5 * expected**0.5, offered
    for side in ("client", "server"):
        assert passing.results[side]["steady_rps"] <= offered["steady_rps"] * 1.1


def test_the_server_side_has_the_client_sides_resolution(passing: Run) -> None:
    """One server point per second from the replicas' own counters, adding up to the total."""
    per_second = passing.results["server_per_second"]
    assert per_second["step"] == "1s"
    assert "every 1 s" in per_second["source"]
    points = per_second["requests"]
    window = passing.results["window"]
    inside = [t for t, _ in points if window["start"] < t < window["end"]]
    assert len(inside) >= window["end"] - window["start"] - 2
    assert round(sum(rps for _, rps in points)) == passing.results["server"]["requests"]


def test_the_report_files_are_complete_and_self_contained(passing: Run) -> None:
    for name in (
        "locust.html",
        "locust_stats.csv",
        "locust_stats_history.csv",
        "locust_failures.csv",
        "locust.json",
        "summary.md",
        "index.html",
        "results.json",
        "seed.json",
    ):
        assert (passing.folder / name).stat().st_size > 0, name
    charts = ["throughput", "latency", "errors", "replicas"]
    for chart in charts:
        png = (passing.folder / f"{chart}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 10_000, chart  # axes alone are smaller than a chart with lines
    page = (passing.folder / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(charts)
    assert not re.search(r"""(src|href)=["']https?://""", page)
    summary = (passing.folder / "summary.md").read_text()
    assert summary.startswith(f"# Load test {passing.folder.name}: PASS")
    assert re.search(r"\| GET /items/\{item_id\} \| [\d,]+ \| 0 \|", summary), summary
    assert "Cache hit ratio" in summary
    assert "Pool peak / size" in summary


def test_requests_are_named_by_route_template(passing: Run) -> None:
    names = [entry["name"] for entry in passing.entries().values()]
    assert len(names) >= 8
    assert [name for name in names if not NAME.match(name)] == []


def test_expected_4xx_are_successes(passing: Run) -> None:
    provoked = {key: e for key, e in passing.entries().items() if "(" in key}
    assert len(provoked) >= 4, provoked.keys()
    assert sum(e["num_requests"] for e in provoked.values()) > 5
    assert {key: e["num_failures"] for key, e in provoked.items()} == dict.fromkeys(provoked, 0)
    assert passing.results["client"]["failures"] == 0
    # The server did answer them with 4xx: they were errors, only expected ones.
    statuses = passing.results["server_extras"]["statuses"]
    assert sum(count for status, count in statuses.items() if status.startswith("4")) > 5


def test_each_simulated_user_is_its_own_client_address(
    passing: Run, live_stack: EphemeralStack, nginx_lines_before: int
) -> None:
    """nginx limits per address; the load must not all come from 127.0.0.1 (sources.py). Only
    this run's lines count: other runs (the failing one freezes nginx) log their own."""
    window = passing.results["window"]
    addresses = set()
    for line in live_stack.log("nginx").splitlines()[nginx_lines_before:]:
        if '"remote_addr":"127.' in line and '"remote_addr":"127.0.0.1"' not in line:
            record = json.loads(line)
            addresses.add(record["remote_addr"])
            assert record["status"] != 429, record
    assert len(addresses) >= USERS, (addresses, window)


def test_the_load_test_dashboard_has_data_during_a_run(
    passing: Run, live_stack: EphemeralStack
) -> None:
    """Locust's numbers reached Prometheus through the Pushgateway while the run lasted."""
    queries = [query for query in panel_queries() if query[0] == "loadtest"]
    assert len(queries) > 10
    during = passing.results["window"]["end"] - 1
    empty = []
    for _, title, expr in queries:
        if not live_stack.query(expr, at=during):
            empty.append(f"{title}: {expr}")
    assert empty == []
    # After the run its group is gone, so the dashboard does not show a test that ended.
    with live_stack.monitoring("pushgateway") as pushgateway:
        groups = pushgateway.get("/api/v1/metrics").json()["data"]
    assert [g for g in groups if g["labels"].get("run") == passing.folder.name] == []


def test_the_repository_thresholds_name_routes_the_api_serves(passing: Run) -> None:
    thresholds = Thresholds.load(REPO_ROOT / "loadtest" / "thresholds.toml")
    served = set(passing.results["server"]["routes"])
    named = {route for group in thresholds.groups for route in group.routes}
    assert named <= served, named - served


def test_check_judges_a_finished_run_again(passing: Run, tmp_path: Path) -> None:
    (tmp_path / "impossible.toml").write_text(IMPOSSIBLE)
    thresholds = f"--thresholds={tmp_path / 'impossible.toml'}"
    again = subprocess.run(
        [sys.executable, "-m", "loadtest", "check", str(passing.folder), thresholds],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1, again.stdout + again.stderr
    assert "FAIL client read p95" in again.stdout
