"""The stack on a one-node swarm (tests/swarm/conftest.py): it converges with no step by hand, every
service healthy and every Prometheus target up; `docker service scale` reaches nginx and
Prometheus without a reload; a rolling update of the api under load and a task killed with
`docker kill` fail no request. The tests run in file order on one deployment."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest

from stack.swarm.live import REPLICAS, SwarmStack
from stack.testing.api import new_item, new_user
from stack.testing.killed import WrkRun, wrk

pytestmark = pytest.mark.engine

# make stack-deploy's own bound (SWARM_TIMEOUT); the deployment fails past it.
CONVERGE_SECONDS = 300
SCALED = 5
# nginx re-resolves `api` every 5 s, Prometheus every 5 s and scrapes every second here.
SEEN_WITHIN = 10.0


@pytest.fixture(scope="module")
def item(swarm_stack: SwarmStack) -> int:
    with httpx.Client(base_url=swarm_stack.nginx, timeout=10) as client:
        owner = new_user(client)
        found: int = new_item(client, owner)["id"]
        return found


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _judged(output: str, stack: SwarmStack, since: str, *, kills: int = 0) -> int:
    """wrk's request count, once every GET is found answered (stack/testing/killed.py), with
    nginx's non-2xx answers beside a failure."""
    run = WrkRun.parse(output)
    try:
        run.assert_no_get_failed(kills=kills, error_log=stack.nginx_errors(since))
    except AssertionError as failed:
        raise AssertionError(f"{failed}\nnginx: {stack.failures(since).most_common(8)}") from None
    return run.requests


def _need_wrk() -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make test installs it: stack/system-deps.sh wrk)")


def test_the_stack_converges_healthy_serves_and_is_scraped(
    swarm_stack: SwarmStack, item: int
) -> None:
    stack = swarm_stack
    assert stack.converged_in < CONVERGE_SECONDS
    counts = stack.replicas()
    assert counts["api"] == (REPLICAS, REPLICAS)
    assert "migrate" not in counts  # folded into the api tasks
    assert all(running == wanted > 0 for running, wanted in counts.values()), counts
    for service in counts:
        for container in stack.containers(service):
            health = stack.inspect(container)["State"].get("Health")
            assert health is None or health["Status"] == "healthy", (service, health)
    # The migrations ran (item exists) and the API answers through nginx.
    answer = httpx.get(f"{stack.nginx}/items/{item}", timeout=10)
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 30
    while True:
        targets = stack.prometheus("/api/v1/targets")
        active = targets["data"]["activeTargets"]
        down = [(t["labels"]["job"], t["lastError"]) for t in active if t["health"] != "up"]
        jobs = {t["labels"]["job"] for t in active}
        if not down and len([t for t in active if t["labels"]["job"] == "api"]) == REPLICAS:
            break
        assert time.monotonic() < deadline, down
        time.sleep(1)
    assert {"api", "nginx", "postgres", "redis", "node", "blackbox", "alertmanager"} <= jobs


def test_scale_to_5_is_scraped_and_served_within_10_s(swarm_stack: SwarmStack, item: int) -> None:
    stack = swarm_stack
    started = time.monotonic()
    stack.docker("service", "scale", "--detach", f"{stack.service('api')}={SCALED}")
    stack.wait_for_replicas("api", SCALED, timeout=120)
    running = time.monotonic()
    since = _now()
    tasks = stack.addresses("api")
    assert len(tasks) == SCALED
    scraped: set[str] = set()
    served: set[str] = set()
    with httpx.Client(base_url=stack.nginx, timeout=10) as client:
        while time.monotonic() - running < SEEN_WITHIN:
            for _ in range(4 * SCALED):
                assert client.get(f"/items/{item}").status_code == 200
            time.sleep(1.1)  # nginx flushes its access log every second
            up = stack.query('up{job="api"} == 1')
            scraped = {r["metric"]["instance"].rsplit(":", 1)[0] for r in up}
            served = stack.nginx_upstreams(since)
            if scraped == tasks and tasks <= served:
                break
    seen = time.monotonic() - running
    stack.timings |= {"scale to 5 running": running - started, "5 seen": seen}
    assert scraped == tasks, (scraped, tasks)
    assert tasks <= served, (served, tasks)
    assert seen < SEEN_WITHIN + 2  # the last round's requests and log flush
    stack.docker("service", "scale", "--detach", f"{stack.service('api')}={REPLICAS}")
    stack.wait_for_replicas("api", REPLICAS, timeout=120)


def test_a_rolling_update_under_load_fails_no_request(swarm_stack: SwarmStack, item: int) -> None:
    """`docker service update --force`: every api task replaced, start-first, one at a time,
    each old one drained (SIGTERM) once its successor is healthy. wrk runs back to back in 10 s
    rounds for as long as the update does."""
    _need_wrk()
    stack = swarm_stack
    before = set(stack.containers("api"))
    since = _now()
    done = threading.Event()
    outputs: list[str] = []

    def load() -> None:
        while not done.is_set():
            output, _ = wrk(f"{stack.nginx}/items/{item}", 10).communicate(timeout=60)
            outputs.append(output)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(2)
        started = time.monotonic()
        stack.docker(
            "service", "update", "--force", "--detach", stack.service("api"), timeout=60
        )  # fmt: skip
        while True:
            state = stack.docker(
                "service", "inspect", "--format", "{{.UpdateStatus.State}}", stack.service("api")
            ).strip()
            if state not in {"updating", "completed"}:
                message = stack.docker(
                    "service", "inspect", "--format", "{{.UpdateStatus.Message}}",
                    stack.service("api"),
                )  # fmt: skip
                tasks = stack.docker(
                    "service", "ps", "--no-trunc", "--format",
                    "{{.Name}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
                    stack.service("api"),
                )  # fmt: skip
                pytest.fail(f"the update went {state}: {message}\n{tasks}")
            if state == "completed":
                break
            assert time.monotonic() - started < 300, "the rolling update did not complete"
            time.sleep(1)
        stack.timings["rolling update of 3"] = time.monotonic() - started
    finally:
        done.set()
        loader.join(timeout=60)
    total = sum(_judged(output, stack, since) for output in outputs)
    # Stricter than the answers: nginx never waited on a connect to a task already gone (the
    # address its cached lookup of `api` still held), even where a retry elsewhere saved the
    # answer. A draining task refuses instead (DRAIN_MIN_SECONDS), which nginx retries at once.
    stalled = [
        line
        for line in stack.nginx_errors(since).splitlines()
        if "timed out" in line and "while connecting to upstream" in line
    ]
    assert not stalled, "\n".join(stalled[:5])
    # The old tasks drain (SHUTDOWN_GRACE_SECONDS) after the update counts as complete.
    stack.wait_for_replicas("api", REPLICAS, timeout=60)
    assert not before & set(stack.containers("api"))  # every task replaced
    for old in before:
        # The swarm form's drain floor reached each task, and each kept refusing that long.
        env = dict(v.split("=", 1) for v in stack.inspect(old)["Config"]["Env"])
        floor = float(env["DRAIN_MIN_SECONDS"])
        assert floor > 0
        drained = [line for line in stack.json_log(old) if line.get("message") == "drained"]
        assert drained, old
        assert drained[0]["seconds"] >= floor, (old, drained)
    assert len(outputs) >= 2, outputs
    assert total > 1000, outputs


def test_a_task_killed_fails_no_get_and_swarm_replaces_it(
    swarm_stack: SwarmStack, item: int
) -> None:
    _need_wrk()
    stack = swarm_stack
    victim = stack.containers("api")[1]
    since = _now()
    run = wrk(f"{stack.nginx}/items/{item}", 12)
    time.sleep(3)
    stack.docker("kill", victim)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    _judged(output, stack, since, kills=1)
    replaced = stack.wait_for_replicas("api", REPLICAS, timeout=120)
    stack.timings["killed task replaced"] = replaced
    assert victim not in stack.containers("api")
