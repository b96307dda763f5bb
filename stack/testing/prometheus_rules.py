"""What the Prometheus static tests share: where the config, rules and their promtool unit tests
live, the conventions they are held to, and promtool itself (skipped where it is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.config.prometheus import COMPOSE_AUTH_PATH
from stack.monitoring_auth import USER
from stack.paths import REPO_ROOT
from stack.testing.tools import run_tool

PROM_DIR = REPO_ROOT / "services" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RULES_DIR = PROM_DIR / "rules"
TESTS_DIR = PROM_DIR / "tests"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.yml"))

ALERT_PREFIX = "Stack"
SEVERITIES = {"critical", "warning"}
# Always firing, for a dead-man's switch; its own route in Alertmanager, never a page.
WATCHDOG = "StackWatchdog"
# Alertmanager inhibits warnings by an equal `service`, so the set is closed on purpose.
SERVICES = {
    "api", "nginx", "postgres", "redis", "blackbox", "host", "prometheus", "alertmanager",
    "pushgateway",
}  # fmt: skip
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
RUNBOOK_URL = re.compile(r"^docs/runbooks\.md#([a-z0-9-]+)$")
# docs/CONTRACT.md: job name -> targets (the api job resolves its replicas through DNS).
STATIC_TARGETS = {
    "nginx": ["nginx-exporter:9113"],
    "redis": ["redis-exporter:9121"],
    "postgres": ["postgres-exporter:9187"],
    "node": ["node-exporter:9100"],
    "alertmanager": ["alertmanager:9093"],
    "prometheus": ["localhost:9090"],
    "pushgateway": ["pushgateway:9091"],
}
# What Prometheus sends to Alertmanager, the Pushgateway and itself (Compose's paths).
MONITORING_AUTH = {"username": USER, "password_file": COMPOSE_AUTH_PATH}
# Probed through the blackbox exporter: the target is a URL, the scrape goes to the prober.
PROBES = {"blackbox": ["http://nginx:8080/health/live"]}
PROBER = "blackbox-exporter:9115"
# level:metric:operations (https://prometheus.io/docs/practices/rules/).
RECORD_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
PUSHGATEWAY = shutil.which("pushgateway") or shutil.which("prometheus-pushgateway")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian/Ubuntu: apt-get install prometheus)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not on PATH (Debian/Ubuntu: apt-get install prometheus)"
)
needs_pushgateway = pytest.mark.skipif(
    PUSHGATEWAY is None,
    reason="pushgateway not on PATH (Debian/Ubuntu: apt-get install prometheus-pushgateway)",
)


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return run_tool(PROMTOOL, *args, timeout=300)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def all_rules() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, rule)
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for _, rule in all_rules() if "alert" in rule]


def alert_tests() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, case)
        for path in TEST_FILES
        for test in load_yaml(path).get("tests", [])
        for case in test.get("alert_rule_test") or []
    ]


# --- layout and config -------------------------------------------------------------------
