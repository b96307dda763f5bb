"""`python -m loadtest` (make loadtest) against the session's native stack: two short runs.

Runs are subprocesses, as `make loadtest` starts them: importing Locust would monkeypatch this
pytest process with gevent. One run must pass generous thresholds; the other, with impossible
thresholds and a data set whose ids do not exist, must fail and say why. (Under Compose the load
test runs as containers: test_compose_replicas.py runs `make loadtest` there.)
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.settings import read_env_file
from loadtest.thresholds import Thresholds
from stack.config.supervisor import api_environment
from stack.ephemeral import EphemeralStack
from stack.grafana.panel_queries import panel_queries
from stack.paths import API_DIR, REPO_ROOT
from stack.procs import free_port, wait_for_port
from stack.testing.loadtest import GENEROUS
from stack.testing.processes import children, frozen

pytestmark = pytest.mark.native_only(
    reason="it drives python -m loadtest from this machine, each user from its own loopback "
    "address; under Compose `make loadtest` runs Locust as containers (test_compose_replicas.py)"
)

USERS = 12
IMPOSSIBLE = (
    GENEROUS.replace("0.01", "0")
    .replace("= 0.5\n", "= 0.95\n")
    .replace("3000", "0.001")
    .replace("5000", "0.001")
)
# Enough of every kind of user in a dozen: the careless ones send the provoked 4xx.
WEIGHTS = ("--reader-weight=60", "--writer-weight=20", "--careless-weight=20")
NAME = re.compile(r"^/(items|users)(/\{(item_id|user_id)\})?( \([a-zA-Z0-9 -]+\))?$")


@dataclass
class Run:
    output: str
    returncode: int
    folder: Path

    @property
    def results(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "results.json").read_text())
        return data

    def entries(self) -> dict[str, dict[str, Any]]:
        """locust.json by "METHOD name"."""
        entries = json.loads((self.folder / "locust.json").read_text())
        return {f"{e['method']} {e['name']}": e for e in entries}


def loadtest(
    stack: EphemeralStack,
    reports: Path,
    *args: str,
    during: Callable[[], None] | None = None,
) -> Run:
    """`python -m loadtest` as `make loadtest` runs it; `during` is called once the load runs."""
    env = {k: v for k, v in stack.env.items() if not k.startswith(("LOADTEST_", "GRAFANA_"))}
    env["LOADTEST_REPORTS_DIR"] = str(reports)
    with subprocess.Popen(
        [sys.executable, "-m", "loadtest", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            if during is not None:
                deadline = time.monotonic() + 120
                while not list(reports.glob("*/window.json")):
                    assert process.poll() is None, "the run ended before its load started"
                    assert time.monotonic() < deadline, "the load did not start in 2 minutes"
                    time.sleep(0.2)
                during()
            output, _ = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
    folders = sorted(reports.iterdir()) if reports.exists() else []
    assert len(folders) <= 1, folders
    return Run(output, process.returncode, folders[0] if folders else reports / "none")


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
    assert run.returncode == 0, run.output
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
        "--duration=10s",
        "--workers=1",
        f"--seed-file={tmp / 'seed.json'}",
        f"--thresholds={tmp / 'impossible.toml'}",
        *WEIGHTS,
        # Most of the run: the users miss what they offer meanwhile. However late the last user
        # starts on a busy machine, most of the stretch after it is frozen.
        during=nginx_frozen(live_stack, after=1.5, seconds=6),
    )


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
    assert run.returncode == 2, run.output
    assert "nginx rate limit: 100000 req/s per address" in run.output
    assert "would answer 429" in run.output
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


@pytest.mark.parametrize(
    ("knobs", "refusal"),
    [
        # More than two Locust processes can send.
        (("--users=5000", "--spawn-rate=1000"), "Lower USERS or LOADTEST_USER_RPS"),
        # A ramp-up that leaves no time at the full rate to judge the throughput over.
        (("--users=50", "--spawn-rate=1", "--duration=30s"), "Raise SPAWN_RATE or DURATION"),
    ],
)
def test_a_load_the_machine_cannot_drive_is_refused_up_front(
    live_stack: EphemeralStack, tmp_path: Path, knobs: tuple[str, ...], refusal: str
) -> None:
    run = loadtest(live_stack, tmp_path / "reports", "run", *knobs)
    assert run.returncode == 2, run.output
    assert refusal in run.output
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_a_host_prometheus_does_not_watch_is_refused(
    live_stack: EphemeralStack, tmp_path: Path
) -> None:
    """HOST another API (a real replica Prometheus does not scrape): the server's side would be
    judged on other traffic, so the run refuses before seeding."""
    stack = live_stack
    env = {**stack.env, **read_env_file(stack.data_dir / ".env")}
    port = free_port()
    settings = {**api_environment(stack.topology, env, 1), "API_PORT": str(port)}
    stray = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=API_DIR,
        env={"PATH": os.environ["PATH"], **settings, "REPLICA_NAME": "stray"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60)
        run = loadtest(stack, tmp_path / "reports", "run", f"--host=http://127.0.0.1:{port}")
    finally:
        stray.terminate()
        stray.wait(timeout=30)
    assert run.returncode == 2, run.output
    assert "HOST is not the stack this Prometheus watches" in run.output
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


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
