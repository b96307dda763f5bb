"""The monitoring plane on the live stack, native and under Compose: Prometheus, Alertmanager and
the Pushgateway refuse anyone without the credential (a push, a silence, a quit, a reload), serve
whoever has it, and no push, with the credential or not, can speak for another job.

(What the credential and the web config are made of: tests/static/test_monitoring_auth.py;
Compose's wiring: tests/static/test_compose.py.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from stack.monitoring_auth import USER
from stack.running import LiveStack

SILENCE_ALL = {
    "matchers": [{"name": "alertname", "value": ".+", "isRegex": True, "isEqual": True}],
    "startsAt": "2020-01-01T00:00:00Z",
    "endsAt": "2100-01-01T00:00:00Z",
    "createdBy": "e2e",
    "comment": "silence everything",
}
# (service, method, path, body) of every write the 2026-11-30 review made without credentials,
# and reads, which give away the stack's numbers and alerts just as well.
REQUESTS = [
    ("pushgateway", "PUT", "/metrics/job/nginx", b"nginx_up 0\n"),
    ("pushgateway", "DELETE", "/metrics/job/locust", None),
    ("pushgateway", "GET", "/api/v1/metrics", None),
    ("alertmanager", "POST", "/api/v2/silences", SILENCE_ALL),
    ("alertmanager", "GET", "/api/v2/alerts", None),
    ("alertmanager", "POST", "/-/reload", None),
    ("prometheus", "POST", "/-/quit", None),
    ("prometheus", "POST", "/-/reload", None),
    ("prometheus", "GET", "/api/v1/query?query=up", None),
    ("prometheus", "GET", "/-/ready", None),
]


def _send(
    client: httpx.Client, method: str, path: str, body: bytes | dict[str, object] | None
) -> httpx.Response:
    if isinstance(body, dict):
        return client.request(method, path, json=body)
    return client.request(method, path, content=body)


@pytest.fixture
def anonymous(live_stack: LiveStack) -> Iterator[dict[str, httpx.Client]]:
    clients = {
        name: httpx.Client(base_url=live_stack.monitoring_plane.url(name), timeout=10)
        for name in ("prometheus", "alertmanager", "pushgateway")
    }
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.parametrize(
    ("service", "method", "path", "body"), REQUESTS, ids=[f"{r[0]} {r[1]} {r[2]}" for r in REQUESTS]
)
def test_the_monitoring_plane_refuses_anyone_without_the_credential(
    live_stack: LiveStack,
    anonymous: dict[str, httpx.Client],
    service: str,
    method: str,
    path: str,
    body: bytes | dict[str, object] | None,
) -> None:
    refused = _send(anonymous[service], method, path, body)
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"].startswith("Basic")
    wrong = httpx.BasicAuth(USER, "not-the-password")
    with httpx.Client(
        base_url=live_stack.monitoring_plane.url(service), auth=wrong, timeout=10
    ) as guess:
        assert _send(guess, method, path, body).status_code == 401
    # Nothing was stopped, silenced or pushed.
    with live_stack.monitoring("prometheus") as prometheus:
        assert prometheus.get("/-/ready").status_code == 200
    with live_stack.monitoring("alertmanager") as alertmanager:
        silences = alertmanager.get("/api/v2/silences").json()
    assert [s for s in silences if s["status"]["state"] != "expired"] == []
    with live_stack.monitoring("pushgateway") as pushgateway:
        groups = pushgateway.get("/api/v1/metrics").json()["data"]
    assert [g["labels"] for g in groups if g["labels"]["job"] == "nginx"] == []


def test_the_credential_pushes_silences_and_reloads_but_nothing_stops_prometheus(
    live_stack: LiveStack,
) -> None:
    group = f"/metrics/job/locust/run/e2e-auth-{uuid.uuid4().hex}"
    with live_stack.monitoring("pushgateway") as pushgateway:
        assert pushgateway.put(group, content=b"locust_users 1\n").status_code == 200
        assert pushgateway.delete(group).status_code == 202
    with live_stack.monitoring("alertmanager") as alertmanager:
        created = alertmanager.post("/api/v2/silences", json=SILENCE_ALL)
        assert created.status_code == 200, created.text
        silence = created.json()["silenceID"]
        assert alertmanager.delete(f"/api/v2/silence/{silence}").status_code == 200
        assert alertmanager.post("/-/reload").status_code == 200
    with live_stack.monitoring("prometheus") as prometheus:
        # No lifecycle API at all: the password does not stop or reload Prometheus either
        # (`make reload` sends SIGHUP).
        for path in ("/-/quit", "/-/reload"):
            answer = prometheus.post(path)
            assert answer.status_code == 403, answer.text
            assert "Lifecycle API is not enabled" in answer.text
        assert prometheus.get("/-/ready").status_code == 200


def _rule_group_evaluated_at(stack: LiveStack, name: str) -> float:
    with stack.monitoring("prometheus") as prometheus:
        groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    [group] = [g for g in groups if g["name"] == name]
    return datetime.fromisoformat(group["lastEvaluation"]).timestamp()


def test_a_push_cannot_speak_for_another_job(live_stack: LiveStack) -> None:
    """Pushed with the credential (the load test holds it): `nginx_up 0` under job="nginx" once
    fired StackNginxDown, a critical page, while nginx was fine."""
    # The exporter's address as Prometheus scrapes it (a port natively, a service name under
    # Compose).
    [scraped_exporter] = live_stack.query('up{job="nginx"}')
    exporter = scraped_exporter["metric"]["instance"]
    run = f"e2e-forge-{uuid.uuid4().hex}"
    forged = {
        "/metrics/job/nginx": b"nginx_up 0\n",
        f"/metrics/job/nginx/instance/{exporter}": b"nginx_up 0\nup 0\n",
        f"/metrics/job/locust/run/{run}": b"locust_users 1\nnginx_up 0\n",
    }
    with live_stack.monitoring("pushgateway") as pushgateway:
        for group, body in forged.items():
            assert pushgateway.put(group, content=body).status_code == 200
        try:
            # The load test's own series arrives: the scrape that took it took the rest too.
            live_stack.wait_for(f'locust_users{{run="{run}"}}', bool)
            scraped = time.time()
            deadline = time.monotonic() + 30
            while _rule_group_evaluated_at(live_stack, "nginx_alerts") <= scraped:
                assert time.monotonic() < deadline, "the nginx alert rules stopped evaluating"
                time.sleep(0.2)
            nginx_up = live_stack.query("nginx_up")
            up = live_stack.query('up{job="nginx"}')
            exported = live_stack.query('{exported_job!=""}')
            alerts = [a["labels"]["alertname"] for a in live_stack.alerts()]
        finally:
            for group in forged:
                pushgateway.delete(group)
    assert [(s["metric"], s["value"][1]) for s in nginx_up] == [
        ({"__name__": "nginx_up", "job": "nginx", "instance": exporter}, "1")
    ]
    assert [(s["metric"].get("instance"), s["value"][1]) for s in up] == [(exporter, "1")]
    assert exported == []
    assert "StackNginxDown" not in alerts
    assert "StackNginxExporterDown" not in alerts


def test_make_reload_reloads_prometheus_by_signal(live_stack: LiveStack) -> None:
    """With no lifecycle endpoint, `make reload` is how an edited services/prometheus is loaded."""
    reloaded = "prometheus_config_last_reload_success_timestamp_seconds"
    [before] = live_stack.query(reloaded)
    result = live_stack.make("reload")
    assert result.returncode == 0, result.stdout + result.stderr
    live_stack.wait_for(
        reloaded, lambda r: len(r) == 1 and float(r[0]["value"][1]) > float(before["value"][1])
    )
