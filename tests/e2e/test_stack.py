"""End to end through the whole stack, native and under Compose: nginx → replicas →
PostgreSQL/Redis, scraped by Prometheus. The session's fixture takes each stack down at the end
and fails if anything of it is left behind.
"""

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import IO

import httpx
import pytest

from stack.config.nginx import nginx_command, render_nginx
from stack.grafana.panel_queries import panel_queries
from stack.paths import REPO_ROOT
from stack.procs import free_port, wait_for_port
from stack.running import LiveStack

EXPECTED_JOBS = {
    "api", "nginx", "redis", "postgres", "node", "alertmanager", "prometheus", "pushgateway",
    "blackbox",
}  # fmt: skip


def _assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    assert {"type", "title", "detail", "instance"} <= body.keys()
    return body


def _seed(stack: LiveStack) -> tuple[dict[str, object], dict[str, str]]:
    user = httpx.post(
        f"{stack.nginx}/users", json={"email": f"{uuid.uuid4().hex}@e2e.io", "name": "e2e"}
    )
    assert user.status_code == 201, user.text
    auth = {"Authorization": f"Bearer {user.json()['token']}"}
    item = httpx.post(f"{stack.nginx}/items", json={"name": "e2e", "price": 1}, headers=auth)
    assert item.status_code == 201, item.text
    return item.json(), auth


def test_every_prometheus_target_is_up(live_stack: LiveStack) -> None:
    def all_up(result: list[dict[str, object]]) -> bool:
        return len(result) == len(EXPECTED_JOBS) + live_stack.replicas - 1 and all(
            r["value"][1] == "1"  # type: ignore[index]
            for r in result
        )

    result = live_stack.wait_for("up", all_up)
    jobs = [r["metric"]["job"] for r in result]
    assert set(jobs) == EXPECTED_JOBS
    assert jobs.count("api") == live_stack.replicas
    # Under Compose the replicas are found by DNS: their targets are their containers' addresses.
    replicas = {r["metric"]["instance"] for r in result if r["metric"]["job"] == "api"}
    assert replicas == set(live_stack.replica_addresses())


def test_requests_through_nginx_reach_every_replica(live_stack: LiveStack) -> None:
    item, _ = _seed(live_stack)
    with httpx.Client(base_url=live_stack.nginx) as client:
        for _ in range(90):
            assert client.get(f"/items/{item['id']}").status_code == 200
    result = live_stack.wait_for(
        'sum by (instance) (http_requests_total{job="api",handler="/items/{item_id}"})',
        lambda r: len(r) == live_stack.replicas,
    )
    shares = sorted(float(r["value"][1]) for r in result)
    assert shares[0] > 0, shares


def test_every_dashboard_panel_query_returns_data(live_stack: LiveStack) -> None:
    """Grafana cannot run here, so its dashboards' queries run against the live Prometheus."""
    item, auth = _seed(live_stack)
    with httpx.Client(base_url=live_stack.nginx) as client:
        for _ in range(30):
            client.get(f"/items/{item['id']}")
            client.get("/items", params={"limit": 5})
            client.get("/items/987654321")
        client.patch(f"/items/{item['id']}", json={"name": "renamed"}, headers=auth)
    # The Load test dashboard's Locust panels have data only while a load test runs; its queries
    # are evaluated inside a run's window by test_loadtest_report.py.
    queries = [query for query in panel_queries() if query[0] != "loadtest"]
    assert len(queries) > 20
    # Rates need two scrapes inside their window; give the 1 s scrapes a moment.
    deadline = time.monotonic() + 30
    empty = queries
    while empty and time.monotonic() < deadline:
        empty = [q for q in empty if not live_stack.query(q[2])]
        time.sleep(1)
    assert empty == [], "\n".join(f"{uid} / {title}: {expr}" for uid, title, expr in empty)


def test_internal_paths_are_not_public(live_stack: LiveStack) -> None:
    for path in ("/metrics", "/metrics/", "/health/ready", "/stub_status"):
        _assert_problem(httpx.get(f"{live_stack.nginx}{path}"), 404)
    assert httpx.get(f"{live_stack.nginx}/health/live").status_code == 200
    # They are served on nginx's internal port, which is not published.
    assert "Active connections" in live_stack.nginx_status()


def test_request_id_reaches_the_api_log_and_nginx_log(live_stack: LiveStack) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    response = httpx.get(
        f"{live_stack.nginx}/items/987654321", headers={"X-Request-ID": request_id}
    )
    assert response.headers["x-request-id"] == request_id
    assert response.json()["request_id"] == request_id

    generated = httpx.get(f"{live_stack.nginx}/items/987654321")
    assert len(generated.headers["x-request-id"]) == 32

    # nginx buffers its access log for up to a second (flush=1s); the API writes at the end of
    # its loop turn.
    deadline = time.monotonic() + 10
    api_lines: list[dict[str, object]] = []
    nginx_lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and not (api_lines and nginx_lines):
        logs = "".join(live_stack.log(f"api-{i}") for i in range(1, live_stack.replicas + 1))
        api_lines = [json.loads(line) for line in logs.splitlines() if request_id in line]
        nginx_log = live_stack.log("nginx")
        nginx_lines = [json.loads(line) for line in nginx_log.splitlines() if request_id in line]
        time.sleep(0.2)
    assert len(api_lines) == 1
    assert api_lines[0]["route"] == "/items/{item_id}"
    assert api_lines[0]["status"] == 404
    assert len(nginx_lines) == 1
    assert nginx_lines[0]["upstream_addr"] in live_stack.replica_addresses()
    assert nginx_lines[0]["status"] == 404


def test_nginx_errors_are_problem_json(live_stack: LiveStack) -> None:
    too_big = httpx.post(
        f"{live_stack.nginx}/users",
        content=b"x" * (2 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    _assert_problem(too_big, 413)


@pytest.mark.native_only(
    reason="it runs a second nginx of its own with the same nginx.conf, whichever runner runs the "
    "replicas; Compose's own rate is a line of services/nginx/compose/http.conf"
)
def test_rate_limited_client_gets_429_problem_with_retry_after(
    live_stack: LiveStack, tmp_path: Path
) -> None:
    """The same nginx.conf with a low rate, in front of the same replicas."""
    port = free_port()
    render_nginx(
        tmp_path, live_stack.replica_addresses(), port, free_port(), access_log="access.log",
        rate="1r/s",
    )  # fmt: skip
    process = subprocess.Popen(nginx_command(tmp_path), stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            statuses = [client.get("/health/live") for _ in range(150)]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited, {r.status_code for r in statuses}
        assert sum(r.status_code == 200 for r in statuses) >= 100  # the burst got through
        _assert_problem(limited[0], 429)
        assert limited[0].headers["retry-after"] == "1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_stopping_one_replica_mid_traffic_fails_no_get(live_stack: LiveStack) -> None:
    item, _ = _seed(live_stack)
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=live_stack.nginx, timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.get(f"/items/{item['id']}").status_code)

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1)
        live_stack.stop_replica(2)
        time.sleep(2)
        live_stack.start_replica(2)
        time.sleep(1)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert len(statuses) > 100
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


def test_all_replicas_down_is_a_gateway_problem(live_stack: LiveStack) -> None:
    """Natively every replica refuses the connection: 502. Under Compose nginx may still hold the
    stopped containers' addresses (for up to `valid`, or longer when the lookup of `api` fails
    rather than finding no address), and connecting to an address nobody has any more times out:
    504. Either way a problem, within nginx's connect timeouts."""
    live_stack.stop_replicas()
    try:
        answer = httpx.get(f"{live_stack.nginx}/items/1", timeout=30)
        expected = {502} if live_stack.runner == "native" else {502, 504}
        assert answer.status_code in expected, answer.text
        _assert_problem(answer, answer.status_code)
    finally:
        live_stack.start_replicas()
    live_stack.wait_for_full_pool()


def test_make_logs_shows_the_request_id_of_nginx_and_the_api(live_stack: LiveStack) -> None:
    """What a person types to follow the stack (it runs until stopped): the request id is in
    nginx's line and in the replica's."""
    request_id = f"make-logs-{uuid.uuid4().hex}"
    httpx.get(f"{live_stack.nginx}/items/987654321", headers={"X-Request-ID": request_id})
    found: list[dict[str, object]] = []
    with subprocess.Popen(
        ["make", "logs"],
        cwd=REPO_ROOT,
        env={**live_stack.env, "STACK": live_stack.runner},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as follower:
        assert follower.stdout is not None
        reader = threading.Thread(target=_collect, args=(follower.stdout, request_id, found))
        reader.start()
        reader.join(timeout=30)
        os.killpg(follower.pid, signal.SIGTERM)
        reader.join(timeout=10)
    # Whatever prefixes the runner adds (a file header, a container name), each line is JSON.
    assert {"upstream_addr", "route"} <= {key for line in found for key in line}, found


def _collect(stream: IO[str], request_id: str, found: list[dict[str, object]]) -> None:
    for line in stream:
        if request_id in line:
            found.append(json.loads(line[line.index("{") :]))
            if len(found) == 2:
                return
