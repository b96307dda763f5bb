"""Static checks of services/alertmanager/alertmanager.yml: validity, routing and inhibition.

amtool validates and resolves routes offline. Inhibition cannot be checked by amtool, so one
test starts the real Alertmanager binary on a loopback port, posts alerts and reads back
which ones it suppresses. Tests skip (shown by -ra) when the binaries are not installed.
"""

from __future__ import annotations

import json
import os
import re
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
ENTRYPOINT = CONFIG.parent / "entrypoint.sh"
PLACEHOLDER_URL = "http://127.0.0.1:5001/"
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


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULES_DIR.glob("*.yml")
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def rule_severities() -> set[str]:
    return {rule["labels"]["severity"] for rule in alert_rules() if rule["alert"] != WATCHDOG}


WATCHDOG = "StackWatchdog"


# --- offline checks ------------------------------------------------------------------------


@needs_amtool
def test_amtool_check_config() -> None:
    result = run_amtool("check-config", CONFIG)
    text = output(result)
    assert result.returncode == 0, text
    assert "SUCCESS" in text, text
    assert "3 receivers" in text, text
    assert "2 inhibit rules" in text, text


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
    # Never a page: its own receiver, for a dead-man's switch.
    (["alertname=StackWatchdog", "severity=none", "service=prometheus"], "watchdog"),
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


def test_every_rule_severity_has_its_own_route() -> None:  # the Watchdog aside
    routes = load_config()["route"]["routes"]
    routed = {
        matcher: route["receiver"] for route in routes for matcher in route.get("matchers", [])
    }
    for severity in rule_severities():
        assert routed.get(f'severity="{severity}"') == severity, routed


def test_group_by_and_inhibition_key_on_service() -> None:
    config = load_config()
    assert config["route"]["group_by"] == ["alertname", "service"]
    outage, slo = config["inhibit_rules"]
    assert outage["target_matchers"] == ['severity="warning"']
    assert outage["equal"] == ["service"]
    assert slo == {
        "source_matchers": ['severity="critical"', 'slo=~".+"'],
        "target_matchers": ['severity="warning"', 'slo=~".+"'],
        "equal": ["service", "slo"],
    }


def test_only_critical_outage_alerts_inhibit() -> None:
    """The outage rule's source names critical alerts that exist, each saying "it is down"."""
    [source] = load_config()["inhibit_rules"][0]["source_matchers"]
    match = re.fullmatch(r'alertname=~"([A-Za-z|]+)"', source)
    assert match, source
    names = match.group(1).split("|")
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    assert {name: severity.get(name) for name in names} == dict.fromkeys(names, "critical") | {
        "StackRedisDown": "warning"  # down, but degraded only: still explains Redis's warnings
    }


def render(tmp_path: Path, url: str | None) -> Path:
    rendered = tmp_path / "rendered.yml"
    env = {"PATH": os.environ["PATH"]}
    if url is not None:
        env["ALERTMANAGER_CRITICAL_WEBHOOK_URL"] = url
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), str(rendered), "echo"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # What it would exec: the command given, with the rendered config.
    assert result.stdout.strip() == f"--config.file={rendered}"
    return rendered


def critical_urls(config_path: Path) -> list[str]:
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    [critical] = [r for r in config["receivers"] if r["name"] == "critical"]
    return [hook["url"] for hook in critical["webhook_configs"]]


def test_entrypoint_without_a_url_runs_the_committed_config(tmp_path: Path) -> None:
    rendered = render(tmp_path, None)
    assert rendered.read_bytes() == CONFIG.read_bytes()
    assert critical_urls(rendered) == [PLACEHOLDER_URL]
    assert rendered.stat().st_mode & 0o077 == 0


@needs_amtool
def test_entrypoint_puts_the_url_in_verbatim(tmp_path: Path) -> None:
    # & and \\ are special to sed and awk's sub(); ' ends a single-quoted YAML scalar.
    url = "https://hooks.example.test/services/T0/B1?token=a&b=c'd\\e"
    rendered = render(tmp_path, url)
    assert critical_urls(rendered) == [url]
    assert rendered.stat().st_mode & 0o077 == 0  # the URL carries a token
    result = run_amtool("check-config", rendered)
    assert result.returncode == 0, output(result)


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
                # An outage mutes the warnings of its own service only.
                alert("StackPostgresDown", "critical", "postgres", job="postgres"),
                alert("StackPostgresExporterErrors", "warning", "postgres", job="postgres"),
                alert("StackRedisMemoryNearLimit", "warning", "redis"),
                # Defect 9 of the 2026-11-30 review: a latency page muted every API warning,
                # the per-handler 5xx warning included. Now it mutes only the latency tickets.
                alert("StackApiLatencyBurnRate1h", "critical", "api", slo="latency"),
                alert("StackApiLatencyBurnRate1d", "warning", "api", slo="latency"),
                alert("StackApiAvailabilityBurnRate3d", "warning", "api", slo="availability"),
                alert("StackApiHigh5xxRatio", "warning", "api", handler="/items"),
            ],
        )

        expected = {
            "StackPostgresDown": "active",
            "StackPostgresExporterErrors": "suppressed",
            "StackRedisMemoryNearLimit": "active",
            "StackApiLatencyBurnRate1h": "active",
            "StackApiLatencyBurnRate1d": "suppressed",
            "StackApiAvailabilityBurnRate3d": "active",
            "StackApiHigh5xxRatio": "active",
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
