"""`python -m loadtest` (make loadtest) against the session's native stack: two short runs.

Runs are subprocesses, as `make loadtest` starts them: importing Locust would monkeypatch this
pytest process with gevent. One run must pass generous thresholds; the other, with impossible
thresholds and a data set whose ids do not exist, must fail and say why.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadtest.thresholds import Thresholds
from stack.ephemeral import EphemeralStack
from stack.grafana.panel_queries import panel_queries
from stack.paths import REPO_ROOT

USERS = 12
GENEROUS = """
[overall]
max_error_ratio = 0.01
min_throughput_rps = 5
[groups.read]
routes = ["GET /items", "GET /items/{item_id}", "GET /users/{user_id}"]
p95_ms = 3000
p99_ms = 5000
[groups.write]
routes = ["POST /users", "POST /items", "PATCH /items/{item_id}", "DELETE /items/{item_id}"]
p95_ms = 3000
p99_ms = 5000
"""
IMPOSSIBLE = (
    GENEROUS.replace("0.01", "0")
    .replace("= 5\n", "= 1000000\n")
    .replace("3000", "0.001")
    .replace("5000", "0.001")
)
# Enough of every kind of user in a dozen: the careless ones send the provoked 4xx.
WEIGHTS = ("--reader-weight=60", "--writer-weight=20", "--careless-weight=20")
NAME = re.compile(r"^/(items|users)(/\{(item_id|user_id)\})?( \([a-zA-Z0-9 -]+\))?$")


@dataclass
class Run:
    process: subprocess.CompletedProcess[str]
    folder: Path

    @property
    def output(self) -> str:
        return self.process.stdout + self.process.stderr

    @property
    def results(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "results.json").read_text())
        return data

    def entries(self) -> dict[str, dict[str, Any]]:
        """locust.json by "METHOD name"."""
        entries = json.loads((self.folder / "locust.json").read_text())
        return {f"{e['method']} {e['name']}": e for e in entries}


def loadtest(stack: EphemeralStack, reports: Path, *args: str) -> Run:
    env = {k: v for k, v in stack.env.items() if not k.startswith(("LOADTEST_", "GRAFANA_"))}
    env["LOADTEST_REPORTS_DIR"] = str(reports)
    process = subprocess.run(
        [sys.executable, "-m", "loadtest", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    folders = sorted(reports.iterdir()) if reports.exists() else []
    assert len(folders) <= 1, folders
    return Run(process, folders[0] if folders else reports / "none")


@pytest.fixture(scope="module")
def passing(live_stack: EphemeralStack, tmp_path_factory: pytest.TempPathFactory) -> Run:
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
    assert run.process.returncode == 0, run.output
    return run


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
        "--duration=6s",
        "--workers=1",
        f"--seed-file={tmp / 'seed.json'}",
        f"--thresholds={tmp / 'impossible.toml'}",
        *WEIGHTS,
    )


def test_a_run_reports_client_and_server_numbers_that_agree(
    passing: Run, live_stack: EphemeralStack
) -> None:
    assert "PASS: report in" in passing.output
    results = passing.results
    client, server = results["client"], results["server"]
    assert results["verdict"] == "PASS"
    assert client["requests"] > 100
    # The window's edges are exact on the server's side: the replicas counted the same requests
    # (give or take one in flight as the window closed), and nothing of the seeding.
    assert abs(server["requests"] - client["requests"]) <= max(3, client["requests"] // 100)
    for side in (client, server):
        assert side["throughput_rps"] > 10
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
    passing: Run, live_stack: EphemeralStack
) -> None:
    """nginx limits per address; the load must not all come from 127.0.0.1 (sources.py)."""
    window = passing.results["window"]
    addresses = set()
    for line in live_stack.log("nginx").splitlines():
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


def test_impossible_thresholds_fail_the_run_and_name_each_breach(failing: Run) -> None:
    assert failing.process.returncode == 1, failing.output
    output = failing.output
    for breach in (
        r"FAIL client read p95: [\d.,]+ ms > 0\.001 ms \(over by",
        r"FAIL server read p95: [\d.,]+ ms > 0\.001 ms \(over by",
        r"FAIL client throughput: [\d.,]+ req/s < 1,000,000\.0 req/s \(short by",
        r"FAIL client error ratio: [\d.]+% > 0\.00%",
    ):
        assert re.search(breach, output), breach
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


def test_a_run_nginx_would_rate_limit_is_refused_up_front(
    live_stack: EphemeralStack, tmp_path: Path
) -> None:
    """All users on one address at more than nginx allows it: refused before any load."""
    run = loadtest(
        live_stack,
        tmp_path / "reports",
        "run",
        "--spread-sources=off",
        "--users=100",
        "--user-rps=1000",
    )
    assert run.process.returncode == 2, run.output
    assert "nginx rate limit: 100000 req/s per address" in run.output
    assert "would answer 429" in run.output
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())
