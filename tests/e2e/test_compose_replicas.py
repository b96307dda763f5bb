"""What only the Compose path can show about replicas: `make scale` up and back down under
writes, a replica killed under wrk, a rolling restart under load, and `make loadtest` run as
containers. The session's Compose stack (tests/e2e/conftest.py) serves every test here.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from stack.compose import ComposeStack
from stack.paths import REPO_ROOT
from stack.running import LiveStack
from stack.testing.api import ApiUser, new_item, new_user
from stack.testing.killed import WrkRun, wrk
from stack.testing.loadtest import GENEROUS

pytestmark = pytest.mark.compose_only(reason="what docker-compose.yml promises, on an engine")

# --- replicas come and go -------------------------------------------------------------------------


@contextmanager
def _traffic(
    base_url: str, owner: ApiUser, item_id: int, *, writes: bool, threads: int = 4
) -> Iterator[list[tuple[str, int]]]:
    """Clients sending requests until the block ends: GETs, and with `writes` every method. Each
    answer is recorded as (method, status)."""
    answers: list[tuple[str, int]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while not stop.is_set():
                answers.append(("GET", http.get(f"/items/{item_id}").status_code))
                if not writes:
                    continue
                made = http.post("/items", json={"name": "w", "price": 1}, headers=owner.auth)
                answers.append(("POST", made.status_code))
                if made.status_code != 201:
                    continue
                path = f"/items/{made.json()['id']}"
                patched = http.patch(path, json={"name": "v"}, headers=owner.auth)
                answers.append(("PATCH", patched.status_code))
                answers.append(("DELETE", http.delete(path, headers=owner.auth).status_code))

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield answers
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)


EXPECTED = {"GET": 200, "POST": 201, "PATCH": 200, "DELETE": 204}


def _failed(answers: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    failures = [answer for answer in answers if answer[1] != EXPECTED[answer[0]]]
    return {answer: failures.count(answer) for answer in set(failures)}


@pytest.fixture
def seeded(live_stack: LiveStack) -> tuple[ApiUser, int]:
    with httpx.Client(base_url=live_stack.nginx, timeout=10) as client:
        owner = new_user(client)
        return owner, new_item(client, owner)["id"]


def _replicas_scraped(stack: LiveStack) -> int:
    result = stack.query('count(up{job="api"} == 1)')
    return int(result[0]["value"][1]) if result else 0


def test_make_scale_to_5_is_scraped_and_served_then_back_to_3_fails_nothing(
    live_stack: LiveStack, seeded: tuple[ApiUser, int]
) -> None:
    stack = ComposeStack.of(live_stack)
    scaled = stack.make("scale", "N=5")
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    ready = time.monotonic()
    assert len(stack.containers("api")) == 5
    # Prometheus finds them by DNS (5 s) and scrapes them; nginx re-resolves `api` (5 s).
    stack.wait_for('count(up{job="api"} == 1)', lambda r: r[0]["value"][1] == "5", timeout=10)
    stack.wait_for_full_pool(timeout=max(1.0, 10 - (time.monotonic() - ready)))
    took = time.monotonic() - ready
    assert took <= 10, took
    owner, item = seeded
    with _traffic(stack.nginx, owner, item, writes=True) as answers:
        time.sleep(1)
        back = stack.make("scale", "N=3")
        assert back.returncode == 0, back.stdout + back.stderr
        time.sleep(6)  # past nginx's next resolution of `api`
    assert len(answers) > 50
    # On a failure, nginx's own account of it: which replica, which error, which try.
    assert _failed(answers) == {}, [
        line for line in stack.log("nginx.error").splitlines() if "upstream" in line
    ][-20:]
    assert len(stack.containers("api")) == 3
    stack.wait_for('count(up{job="api"})', lambda r: r[0]["value"][1] == "3", timeout=30)
    print(f"\nmake scale N=5: scraped and served by all 5 within {took:.1f} s")


# Kills the replica's process inside its container, as the kernel's OOM killer would: a crash.
CRASH = (
    "import os, signal\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    if open(f'/proc/{pid}/cmdline', 'rb').read() == b'python\\0-m\\0app\\0':\n"
    "        os.kill(int(pid), signal.SIGKILL)\n"
)


@pytest.mark.parametrize("how", ["docker kill", "crash"])
def test_a_replica_killed_under_wrk_fails_no_get_and_comes_back(
    live_stack: LiveStack, seeded: tuple[ApiUser, int], how: str
) -> None:
    """`docker kill` is a stop by hand, which Docker's restart policy respects: the next `make up`
    brings the replica back. A crash (its process killed) the restart policy undoes by itself.
    Nothing fails a GET but the kill itself cutting one answer mid-way (stack/testing/killed.py)."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make test installs it: stack/system-deps.sh wrk)")
    stack = ComposeStack.of(live_stack)
    victim = stack.containers("api")[1]
    before = stack.inspect(victim)["State"]["StartedAt"]
    _, item = seeded
    errors_before = len(stack.log("nginx.error"))
    run = wrk(f"{stack.nginx}/items/{item}", 12)
    time.sleep(3)
    if how == "docker kill":
        stack.docker("kill", victim)
    else:
        stack.docker("exec", victim, "python", "-c", CRASH)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    WrkRun.parse(output).assert_no_get_failed(
        kills=1, error_log=stack.log("nginx.error")[errors_before:]
    )
    if how == "docker kill":
        assert stack.inspect(victim)["State"]["Status"] == "exited"
        again = stack.make("up")
        assert again.returncode == 0, again.stdout + again.stderr
    deadline = time.monotonic() + 60
    while stack.inspect(victim)["State"]["StartedAt"] == before:
        assert time.monotonic() < deadline, f"the replica did not come back after {how}"
        time.sleep(0.5)
    assert stack.containers("api")[1] == victim  # the same container, started again
    stack.wait_until_replica_serves(2)
    stack.wait_for_full_pool()


def test_a_rolling_restart_fails_no_request_of_any_method(
    live_stack: LiveStack, seeded: tuple[ApiUser, int]
) -> None:
    """Each replica stopped (SIGTERM, its drain) and started again, one at a time, the next only
    once nginx routes to the last one again: a deploy by hand."""
    stack = ComposeStack.of(live_stack)
    before = stack.replica_ids()
    owner, item = seeded
    with _traffic(stack.nginx, owner, item, writes=True) as answers:
        for replica in range(1, stack.replicas + 1):
            time.sleep(1)
            stack.stop_replica(replica)
            stack.start_replica(replica)
            stack.wait_for_full_pool()
    assert all(old != new for old, new in zip(before, stack.replica_ids(), strict=True))
    assert {method for method, _ in answers} == set(EXPECTED)
    assert _failed(answers) == {}


# --- the load test as containers ---------------------------------------------------------------


def test_make_loadtest_runs_as_containers_passes_and_writes_its_report(
    live_stack: LiveStack,
) -> None:
    """The default run, but 30 s, judged by generous thresholds (this machine is shared), and with
    every user spawned at once: each spawn message costs a Locust worker about a second of CPU
    (it builds its whole argument parser once per option), so the default ramp's stream of them
    starved 5 worker containers on 2 busy cores past the master's 3-s heartbeat."""
    stack = ComposeStack.of(live_stack)
    reports = REPO_ROOT / "loadtest" / "reports"
    reports.mkdir(exist_ok=True)
    # Under loadtest/, which the master's container mounts: the same relative path for both.
    thresholds = reports / f"thresholds-{stack.project}.toml"
    thresholds.write_text(GENEROUS)
    try:
        run = stack.make(
            "loadtest", "DURATION=30s", "SPAWN_RATE=50", timeout=900,
            environment={"LOADTEST_THRESHOLDS": str(thresholds.relative_to(REPO_ROOT))},
        )  # fmt: skip
    finally:
        thresholds.unlink()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    match = re.search(r"PASS: report in (\S+)", output)
    assert match, output[-3000:]
    folder = reports / Path(match[1]).parent.name
    try:
        results = json.loads((folder / "results.json").read_text())
        assert results["verdict"] == "PASS"
        client, server = results["client"], results["server"]
        # Both sides measured the run (how exactly they agree is test_loadtest.py's, natively).
        assert client["requests"] > 500
        assert server["requests"] > 500
        assert len(results["server_extras"]["replicas"]) == stack.replicas
        for name in ("summary.md", "index.html", "locust.json", "throughput.png"):
            assert (folder / name).stat().st_size > 0, name
        # The workers were containers of the project: five, each its own address to nginx.
        assert len(stack.containers("locust-worker")) == 5
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nmake loadtest under Compose: {client['requests']} requests, PASS")
