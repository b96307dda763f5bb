"""Alerts proven to arrive, natively and under Compose: a real fault on a stack of its own, with the
real rules, `for:` durations, routes and inhibitions; a webhook receiver this test runs stands in
for the pager (ALERTMANAGER_CRITICAL_WEBHOOK_URL, the setting a deployment points at its own).
Natively it listens on loopback; under Compose on the host's address on the project's public
network, the one address of this machine Alertmanager's container reaches (never 0.0.0.0).

PostgreSQL is stopped for real, so the test runs its own throwaway stack: the e2e session's shared
stack must not lose its database under the other modules. Run with -s to see the measured delays.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import engine
from stack.compose import throwaway_compose_stack
from stack.config.prometheus import seconds
from stack.envfile import set_values
from stack.ephemeral import throwaway_stack
from stack.paths import ALERTMANAGER_DIR, PROMETHEUS_DIR
from stack.running import LiveStack

pytestmark = pytest.mark.stack

FAULT = "StackPostgresDown"
# Fires with it (the exporter's scrapes of PostgreSQL fail) and is inhibited by it.
INHIBITED = "StackPostgresExporterErrors"
# The stack's own default, not the e2e session's 1 s: postgres_exporter takes about 1.5 s to
# answer while PostgreSQL refuses connections, so a 1 s scrape timeout reads as "exporter
# down" (a warning) instead of pg_up 0. The test proves the configuration a deployment runs
# (under Compose the committed prometheus.yml as it is).
SCRAPE_INTERVAL = "15s"
# On top of the configured waits: the scrape that sees pg_up 0, the evaluation that starts the
# `for:` and the one that ends it (each up to one interval late), and the dispatch.
SLACK_SECONDS = 3 * seconds(SCRAPE_INTERVAL) + 5


@dataclass
class Webhook:
    """Alertmanager's webhook payloads, as they arrive, with their arrival time."""

    url: str
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float
    ) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [(at, payload) for at, payload in self.received if match(payload)]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no matching notification within {timeout:.0f}s: {self.received}")

    def names(self) -> set[str]:
        with self.lock:
            return {a["labels"]["alertname"] for _, p in self.received for a in p["alerts"]}


@contextmanager
def receiving(host: str) -> Iterator[Webhook]:
    """A webhook receiver on `host`, on a port the kernel picks."""
    received: list[tuple[float, dict[str, Any]]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                received.append((time.monotonic(), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Webhook(f"http://{host}:{server.server_port}/critical", received, lock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def alerting_stack(
    runner: str, request: pytest.FixtureRequest
) -> Iterator[tuple[LiveStack, Webhook]]:
    if runner == "native":
        with (
            receiving("127.0.0.1") as hook,
            throwaway_stack(
                "alert-delivery-",
                1,
                NATIVE_SCRAPE_INTERVAL=SCRAPE_INTERVAL,
                SHUTDOWN_GRACE_SECONDS="5",
                ALERTMANAGER_CRITICAL_WEBHOOK_URL=hook.url,
            ) as stack,
        ):
            yield stack, hook
        return
    docker: engine.Engine = request.getfixturevalue("docker_engine")
    committed = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["global"]
    assert committed["scrape_interval"] == SCRAPE_INTERVAL
    # The public network exists once the stack is up; the receiver's URL goes into the settings
    # and `make up` applies it, as a person pointing the pager elsewhere would.
    with (
        throwaway_compose_stack(
            "alerts", docker.env, replicas=1, SHUTDOWN_GRACE_SECONDS="5"
        ) as compose_stack,
        receiving(compose_stack.gateway("public")) as hook,
    ):
        set_values(Path(compose_stack.env_file), {"ALERTMANAGER_CRITICAL_WEBHOOK_URL": hook.url})
        applied = compose_stack.make("up")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield compose_stack, hook


def _rule(name: str) -> dict[str, Any]:
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    return dict(rule)
    raise KeyError(name)


def _critical_route() -> dict[str, Any]:
    route = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())["route"]
    [critical] = [r for r in route["routes"] if r["matchers"] == ['severity="critical"']]
    return {**route, **critical}


def _rendered(template: str, labels: dict[str, str], value: str) -> str:
    """The rule's annotation as Prometheus renders it, for templates using only these two."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    return text.replace("{{ $value }}", value)


def _firing(payload: dict[str, Any], name: str) -> bool:
    return any(
        a["labels"]["alertname"] == name and a["status"] == "firing" for a in payload["alerts"]
    )


def _resolved(payload: dict[str, Any], name: str) -> bool:
    return any(
        a["labels"]["alertname"] == name and a["status"] == "resolved" for a in payload["alerts"]
    )


def test_postgres_down_pages_inhibits_its_warning_and_resolves(
    alerting_stack: tuple[LiveStack, Webhook],
) -> None:
    stack, webhook = alerting_stack
    rule = _rule(FAULT)
    route = _critical_route()
    fire_bound = seconds(rule["for"]) + seconds(route["group_wait"]) + SLACK_SECONDS
    resolve_bound = seconds(route["group_interval"]) + SLACK_SECONDS
    [pg_up] = stack.wait_for(
        'pg_up{job="postgres"}', lambda r: [x["value"][1] for x in r] == ["1"], timeout=60
    )
    exporter = pg_up["metric"]["instance"]

    stopped_at = time.monotonic()
    stack.stop_service("postgres")
    try:
        arrived_at, page = webhook.wait_for(lambda p: _firing(p, FAULT), fire_bound)
        # The warning it explains fires too, and Alertmanager holds it back.
        inhibited = _until(lambda: _inhibited(stack, INHIBITED), timeout=fire_bound)
    finally:
        started_at = time.monotonic()
        stack.start_service("postgres")
    resolved_at, resolution = webhook.wait_for(lambda p: _resolved(p, FAULT), resolve_bound)
    stack.wait_for(
        'pg_up{job="postgres"}', lambda r: [x["value"][1] for x in r] == ["1"], timeout=60
    )

    assert page["receiver"] == "critical"
    [alert] = [a for a in page["alerts"] if a["labels"]["alertname"] == FAULT]
    labels = {"alertname": FAULT, **rule["labels"], "job": "postgres", "instance": exporter}
    assert alert["labels"] == labels
    assert alert["annotations"] == {
        key: _rendered(template, labels, "0") for key, template in rule["annotations"].items()
    }
    assert inhibited["status"]["inhibitedBy"], inhibited
    assert INHIBITED not in webhook.names()
    [resolved] = [a for a in resolution["alerts"] if a["labels"]["alertname"] == FAULT]
    assert resolved["labels"] == labels
    print(
        f"\n{stack.runner} {FAULT}: fault -> page {arrived_at - stopped_at:.1f}s "
        f"(bound {fire_bound:.0f}s), "
        f"recovery -> resolved {resolved_at - started_at:.1f}s (bound {resolve_bound:.0f}s)"
    )


def _inhibited(stack: LiveStack, name: str) -> dict[str, Any] | None:
    alerts = stack.alertmanager_alerts(name)
    suppressed = [a for a in alerts if a["status"]["state"] == "suppressed"]
    return suppressed[0] if suppressed else None


def _until(check: Callable[[], dict[str, Any] | None], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.5)
    raise AssertionError(f"not seen within {timeout:.0f}s")
