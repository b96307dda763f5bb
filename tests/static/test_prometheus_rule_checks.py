"""The rule checks can fail: promtool rejects broken files, and the unit tests catch plausible
regressions of the rules (each mutation undoes a reviewed fix)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stack.testing.prometheus_rules import (
    PROM_DIR,
    RULES_DIR,
    load_yaml,
    needs_promtool,
    run_promtool,
)
from stack.testing.tools import output

# --- the checks can fail -------------------------------------------------------------------

BROKEN_RULE_FILES = {
    "promql-syntax": """
groups:
  - name: broken
    rules:
      - alert: StackBroken
        expr: rate(http_requests_total[5m]
        labels: {severity: warning, service: api}
""",
    "bad-template": """
groups:
  - name: broken
    rules:
      - alert: StackBroken
        expr: up == 0
        labels: {severity: warning, service: api}
        annotations:
          summary: '{{ $labels.instance '
""",
    "alert-and-record": """
groups:
  - name: broken
    rules:
      - alert: StackBroken
        record: job:up:sum
        expr: sum by (job) (up)
""",
    "duplicate-group": """
groups:
  - name: same
    rules: [{record: 'job:up:sum', expr: 'sum by (job) (up)'}]
  - name: same
    rules: [{record: 'job:up:max', expr: 'max by (job) (up)'}]
""",
}


@needs_promtool
@pytest.mark.parametrize("content", BROKEN_RULE_FILES.values(), ids=BROKEN_RULE_FILES.keys())
def test_promtool_check_rules_rejects_broken_file(tmp_path: Path, content: str) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(content, encoding="utf-8")
    result = run_promtool("check", "rules", broken)
    assert result.returncode != 0, output(result)
    assert "FAILED" in output(result), output(result)


@needs_promtool
def test_promtool_unit_test_with_wrong_expectation_fails(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_test.yml"
    wrong.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES_DIR / "api_alerts.yml")],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {
                                "series": 'up{job="api",instance="a:8000",replica="a"}',
                                "values": "1x10",
                            }
                        ],
                        "alert_rule_test": [
                            {
                                "eval_time": "5m",
                                "alertname": "StackApiReplicaDown",
                                "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                            }
                        ],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    result = run_promtool("test", "rules", wrong)
    assert result.returncode != 0, output(result)
    assert "FAILED" in output(result), output(result)


# Each mutation is a plausible regression; the unit tests must notice it.
MUTATIONS = {
    "page-threshold": ("slo_alerts.yml", "/ 0.001 > 14.4", "/ 0.001 > 30"),
    "no-absent-arm": ("api_alerts.yml", ' or absent(up{job="api"})', ""),
    "no-zero-fill": (
        "api_recording.yml",
        "or\n          0 * sum by (job, handler) (rate(http_requests_total[5m]))",
        "",
    ),
    "short-window-dropped": (
        "slo_alerts.yml",
        'and on (service)\n          (1 - service:sli_availability:ratio_rate5m{service="api"})'
        " / 0.001 > 14.4\n",
        "",
    ),
    # The 2026-11-30 review's defects, each undone again.
    "1-no-bad-event-floor": (
        "slo_alerts.yml",
        "and on (service)\n"
        '          service:sli_availability_bad_events:count1h{service="api"} >= 10',
        "",
    ),
    "2-no-edge-probes": (
        "slo_recording.yml",
        "or\n            label_replace("
        'job:probe_success:avg_over_time1h{job="blackbox"}, "service", "api", "", "")',
        "",
    ),
    # "Expected" read from the targets Prometheus discovers is the defect itself.
    "4-expected-from-discovery": (
        "capacity_alerts.yml",
        'max by (job) (api_replicas_expected{job="api"})',
        'count by (job) (up{job="api"})',
    ),
    "7-exporter-down-pages": (
        "postgres_alerts.yml",
        'pg_up{job="postgres"} == 0',
        'pg_up{job="postgres"} == 0 or up{job="postgres"} == 0',
    ),
    "8-value-not-burn-rate": (
        "slo_alerts.yml",
        '(1 - service:sli_availability:ratio_rate1h{service="api"}) / 0.001 > 14.4',
        '(1 - service:sli_availability:ratio_rate1h{service="api"}) > 14.4 * 0.001',
    ),
}


@needs_promtool
@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_unit_tests_catch_rule_regression(tmp_path: Path, mutation: tuple[str, str, str]) -> None:
    file_name, old, new = mutation
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM_DIR, copy)
    target = copy / "rules" / file_name
    text = target.read_text(encoding="utf-8")
    assert old in text, f"mutation no longer applies to {file_name}; update MUTATIONS"
    target.write_text(text.replace(old, new, 1), encoding="utf-8")

    check = run_promtool("check", "rules", target)
    assert check.returncode == 0, output(check)  # still valid, only wrong
    # Only the test files that load the mutated file; the others cannot notice it anyway.
    affected = [
        path
        for path in sorted((copy / "tests").glob("*.yml"))
        if any(Path(f).name == file_name for f in load_yaml(path)["rule_files"])
    ]
    assert affected, f"no unit test loads {file_name}"
    result = run_promtool("test", "rules", *affected)
    assert result.returncode != 0, output(result)
    assert "FAILED" in output(result), output(result)
