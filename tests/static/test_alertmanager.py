"""Static checks of services/alertmanager/alertmanager.yml: validity, routing and inhibition.

amtool validates and resolves routes offline. Inhibition cannot be checked by amtool, so one
test starts the real Alertmanager binary on a loopback port, posts alerts and reads back
which ones it suppresses. Tests skip (shown by -ra) when the binaries are not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.paths import REPO_ROOT
from stack.procs import free_port
from stack.testing.tools import background, output, run_tool

CONFIG = REPO_ROOT / "services" / "alertmanager" / "alertmanager.yml"
RULES_DIR = REPO_ROOT / "services" / "prometheus" / "rules"

AMTOOL = shutil.which("amtool")
# Debian ships the server as prometheus-alertmanager; upstream tarballs call it alertmanager.
ALERTMANAGER = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool not on PATH (Debian/Ubuntu: apt-get install prometheus-alertmanager)",
)
needs_alertmanager = pytest.mark.skipif(
    ALERTMANAGER is None,
    reason="alertmanager not on PATH (Debian/Ubuntu: apt-get install prometheus-alertmanager)",
)


def run_amtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None
    return run_tool(AMTOOL, *args, timeout=60)


def load_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return config


def rule_severities() -> set[str]:
    return {
        rule["labels"]["severity"]
        for path in RULES_DIR.glob("*.yml")
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


# --- offline checks ------------------------------------------------------------------------


@needs_amtool
def test_amtool_check_config() -> None:
    result = run_amtool("check-config", CONFIG)
    text = output(result)
    assert result.returncode == 0, text
    assert "SUCCESS" in text, text
    assert "2 receivers" in text, text
    assert "1 inhibit rules" in text, text


@needs_amtool
def test_amtool_check_config_rejects_broken_config(tmp_path: Path) -> None:
    config = load_config()
    config["route"]["routes"][0]["receiver"] = "no-such-receiver"
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_amtool("check-config", broken)
    assert result.returncode != 0, output(result)
    assert "no-such-receiver" in output(result), output(result)


ROUTES = [
    (["severity=critical", "service=api"], "critical"),
    (["severity=critical", "service=postgres", "alertname=StackPostgresDown"], "critical"),
    (["severity=warning", "service=api"], "warning"),
    (["severity=warning", "service=api", "alertname=StackApiReplicaDown"], "warning"),
    # A rule without a known severity is a bug; it must still reach someone.
    (["service=api"], "critical"),
    (["severity=info", "service=redis"], "critical"),
]


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"), ROUTES, ids=[",".join(labels) for labels, _ in ROUTES]
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    result = run_amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}",
        *labels,
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == receiver, output(result)


@needs_amtool
def test_amtool_route_verification_can_fail() -> None:
    result = run_amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", "--verify.receivers=warning",
        "severity=critical", "service=api",
    )  # fmt: skip
    assert result.returncode != 0, output(result)
    assert "did not match" in output(result), output(result)


def test_every_rule_severity_has_its_own_route() -> None:
    routes = load_config()["route"]["routes"]
    routed = {
        matcher: route["receiver"] for route in routes for matcher in route.get("matchers", [])
    }
    for severity in rule_severities():
        assert routed.get(f'severity="{severity}"') == severity, routed


def test_group_by_and_inhibition_key_on_service() -> None:
    config = load_config()
    assert config["route"]["group_by"] == ["alertname", "service"]
    assert config["inhibit_rules"] == [
        {
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["service"],
        }
    ]


# --- live inhibition check -----------------------------------------------------------------


def http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


def wait_until(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (urllib.error.URLError, ConnectionError):
            last = None
        if last:
            return last
        time.sleep(0.2)
    return last


def alert(alertname: str, severity: str, service: str, **extra: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": alertname, "severity": severity, "service": service, **extra},
        "annotations": {"summary": "test", "description": "test"},
    }


@pytest.mark.servers
@needs_alertmanager
def test_critical_inhibits_warnings_of_the_same_service_only(tmp_path: Path) -> None:
    assert ALERTMANAGER is not None
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "alertmanager.log"
    argv = [
        ALERTMANAGER,
        f"--config.file={CONFIG}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip port: a single, isolated instance
    ]
    with background(argv, log):
        ready = wait_until(lambda: http("GET", f"{base}/api/v2/status"))
        assert ready, log.read_text(encoding="utf-8")

        http(
            "POST",
            f"{base}/api/v2/alerts",
            [
                alert("StackApiDown", "critical", "api", job="api"),
                alert("StackApiReplicaDown", "warning", "api", instance="10.0.0.3:8000"),
                alert("StackApiLatencyBurnRate3d", "warning", "api", slo="latency"),
                # Another service's warning: no critical for it, so it must stay active.
                alert("StackRedisSlow", "warning", "redis"),
            ],
        )

        expected = {
            "StackApiDown": "active",
            "StackApiReplicaDown": "suppressed",
            "StackApiLatencyBurnRate3d": "suppressed",
            "StackRedisSlow": "active",
        }
        seen: dict[str, str] = {}

        # The inhibitor learns about the critical asynchronously, so poll briefly.
        def settled() -> bool:
            alerts = http("GET", f"{base}/api/v2/alerts")
            seen.clear()
            seen.update({a["labels"]["alertname"]: a["status"]["state"] for a in alerts})
            return seen == expected

        wait_until(settled)
        assert seen == expected, log.read_text(encoding="utf-8")
