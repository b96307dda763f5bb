"""The alert and recording rules: one file per domain, promtool's checks and unit tests, and the
conventions (names, labels, annotations, runbooks) every alert is held to."""

from __future__ import annotations

import re
from typing import Any

import pytest

from stack.paths import REPO_ROOT
from stack.testing.prometheus_rules import (
    ALERT_PREFIX,
    RECORD_NAME,
    RULE_FILES,
    RUNBOOK_URL,
    RUNBOOKS,
    SERVICES,
    SEVERITIES,
    TEST_FILES,
    WATCHDOG,
    alert_rules,
    alert_tests,
    all_rules,
    load_yaml,
    needs_promtool,
    run_promtool,
)
from stack.testing.tools import output


def test_one_rule_file_per_domain() -> None:
    assert {p.name for p in RULE_FILES} >= {
        "api_alerts.yml",
        "api_recording.yml",
        "capacity_alerts.yml",
        "edge_alerts.yml",
        "host_alerts.yml",
        "monitoring_alerts.yml",
        "nginx_alerts.yml",
        "postgres_alerts.yml",
        "redis_alerts.yml",
        "slo_alerts.yml",
        "slo_recording.yml",
    }
    assert TEST_FILES, "services/prometheus/tests/ has no promtool test files"


@needs_promtool
def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", *(p.relative_to(REPO_ROOT) for p in RULE_FILES))
    text = output(result)
    assert result.returncode == 0, text
    found = dict(re.findall(r"Checking (\S+)\n\s+SUCCESS: (\d+) rules found", text))
    expected = {
        str(path.relative_to(REPO_ROOT)): str(
            sum(len(g["rules"]) for g in load_yaml(path)["groups"])
        )
        for path in RULE_FILES
    }
    assert found == expected, text


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", *(p.relative_to(REPO_ROOT) for p in TEST_FILES))
    text = output(result)
    assert result.returncode == 0, text
    assert text.count("SUCCESS") == len(TEST_FILES), text
    assert "FAILED" not in text, text


# --- rule conventions (YAML only) ----------------------------------------------------------


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_required_labels_and_annotations(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(rf"{ALERT_PREFIX}[A-Z][A-Za-z0-9]*", name), name
    labels = rule.get("labels", {})
    assert labels.get("severity") in (SEVERITIES if name != WATCHDOG else {"none"}), labels
    assert labels.get("service") in SERVICES, labels
    # A one-evaluation blip should never notify.
    assert "for" in rule, f"{name} has no `for`"
    annotations = rule.get("annotations", {})
    assert annotations.get("summary", "").strip(), f"{name} has no summary"
    description = annotations.get("description", "")
    assert re.search(r"\{\{.*(\$value|\$labels\.).*\}\}", description), (
        f"{name}: description must template the value or a label"
    )
    assert RUNBOOK_URL.match(annotations.get("runbook_url", "")), f"{name}: no runbook_url"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_anchor_extraction() -> None:
    assert _anchors("# Runbooks\n## StackApiDown\ntext\n### What it means\n") == {
        "runbooks", "stackapidown", "what-it-means",
    }  # fmt: skip


def test_every_runbook_url_names_a_section_of_the_runbooks() -> None:
    anchors = _anchors(RUNBOOKS.read_text(encoding="utf-8"))
    missing = {}
    for rule in alert_rules():
        match = RUNBOOK_URL.match(rule["annotations"].get("runbook_url", ""))
        if match is None or match.group(1) not in anchors:
            missing[rule["alert"]] = rule["annotations"].get("runbook_url")
    assert missing == {}, f"runbook_url without a section in {RUNBOOKS.name}"


def test_rule_names_are_unique_and_recording_rules_follow_convention() -> None:
    alerts = [rule["alert"] for rule in alert_rules()]
    assert len(alerts) == len(set(alerts)), alerts
    records = [rule["record"] for _, rule in all_rules() if "record" in rule]
    assert len(records) == len(set(records)), records
    assert [name for name in records if not RECORD_NAME.match(name)] == []
    assert all(
        path.name.endswith("_recording.yml") for path, rule in all_rules() if "record" in rule
    )


def test_every_alert_fires_and_stays_silent_in_some_unit_test() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for _, case in alert_tests():
        if case.get("exp_alerts"):
            fired.add(case["alertname"])
        elif "exp_alerts" in case and case["exp_alerts"] == []:
            silent.add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert sorted(names - fired) == [], "alerts never expected to fire in services/prometheus/tests"
    # The Watchdog's whole point is never to stay silent.
    assert sorted(names - silent - {WATCHDOG}) == [], (
        "alerts never expected to stay silent (exp_alerts: [])"
    )


def test_unit_tests_only_name_existing_alerts_and_rule_files() -> None:
    # A typo in alertname would make an `exp_alerts: []` case pass vacuously.
    names = {rule["alert"] for rule in alert_rules()}
    unknown = sorted({case["alertname"] for _, case in alert_tests()} - names)
    assert unknown == []
    covered = set()
    for path in TEST_FILES:
        for rule_file in load_yaml(path)["rule_files"]:
            resolved = (path.parent / rule_file).resolve()
            assert resolved.is_file(), f"{path.name}: {rule_file} does not exist"
            covered.add(resolved)
    assert sorted(p.name for p in RULE_FILES if p.resolve() not in covered) == []


def test_fired_alerts_in_unit_tests_pin_severity_and_service() -> None:
    by_name = {rule["alert"]: rule["labels"] for rule in alert_rules()}
    for path, case in alert_tests():
        for alert in case.get("exp_alerts") or []:
            labels = alert["exp_labels"]
            expected = by_name[case["alertname"]]
            assert labels["severity"] == expected["severity"], (path.name, case["alertname"])
            assert labels["service"] == expected["service"], (path.name, case["alertname"])
            assert alert.get("exp_annotations", {}).keys() >= {
                "summary", "description", "runbook_url",
            }  # fmt: skip
