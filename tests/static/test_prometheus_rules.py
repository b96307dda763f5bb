"""Static checks of services/prometheus: scrape config, rules and their promtool unit tests.

promtool is the same validator Prometheus runs at load time, so a rule or config that passes
here also loads in the container (the image pins a newer 2.x, whose syntax is a superset).
Without promtool on PATH the promtool tests skip (shown by -ra) instead of failing; the
pure-YAML checks still run.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.config.prometheus import COMPOSE_AUTH_PATH
from stack.monitoring_auth import USER
from stack.paths import REPO_ROOT
from stack.procs import free_port, wait_for_port
from stack.testing.tools import background, output, run_tool

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


def test_scrape_config_matches_contract() -> None:
    config = load_yaml(CONFIG)
    # Relative to prometheus.yml; a runner that moves the config must keep rules/ beside it.
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["alertmanager:9093"]}], "basic_auth": MONITORING_AUTH}
    ]

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"api", *STATIC_TARGETS, *PROBES}
    # Prometheus, Alertmanager and the Pushgateway refuse requests without the credential.
    authenticated = {name for name, job in jobs.items() if "basic_auth" in job}
    assert authenticated == {"prometheus", "alertmanager", "pushgateway"}
    assert all(jobs[name]["basic_auth"] == MONITORING_AUTH for name in authenticated)
    # A push must not speak for another job (it once fired StackNginxDown): the pushed job is
    # kept apart (exported_job), so only the load test's series survive relabelling.
    assert jobs["pushgateway"]["honor_labels"] is False

    # The native runner rewrites targets in place, so each job keeps exactly one plain
    # discovery block and nothing else that could carry targets.
    sd_keys = {key for job in jobs.values() for key in job if key.endswith("_configs")}
    assert sd_keys <= {
        "static_configs", "dns_sd_configs", "relabel_configs", "metric_relabel_configs",
    }  # fmt: skip
    for name, targets in STATIC_TARGETS.items():
        assert jobs[name]["static_configs"] == [{"targets": targets}], name
        assert "dns_sd_configs" not in jobs[name], name

    for name, urls in PROBES.items():
        probe = jobs[name]
        assert probe["static_configs"] == [{"targets": urls}], name
        assert probe["metrics_path"] == "/probe"
        relabel = probe["relabel_configs"]
        assert {"source_labels": ["__address__"], "target_label": "__param_target"} in relabel
        # instance stays the probed URL, so an alert names what failed, not the prober.
        assert {"source_labels": ["__param_target"], "target_label": "instance"} in relabel
        assert {"target_label": "__address__", "replacement": PROBER} in relabel

    api = jobs["api"]
    assert "static_configs" not in api
    [dns] = api["dns_sd_configs"]
    assert (dns["names"], dns["type"], dns["port"]) == (["api"], "A", 8000)
    assert any(rule.get("target_label") == "replica" for rule in api["relabel_configs"])
    # instance must survive: dashboards and StackApiReplicaDown key on it.
    assert all(rule.get("target_label") != "instance" for rule in api["relabel_configs"])


@needs_promtool
def test_promtool_check_config() -> None:
    result = run_promtool("check", "config", CONFIG.relative_to(REPO_ROOT))
    text = output(result)
    assert result.returncode == 0, text
    # `check config` also loads and checks every rule file the glob matches.
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in text, text
    assert "is valid prometheus config file syntax" in text, text
    assert "FAILED" not in text, text


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


def api_target_labels(base: str) -> list[dict[str, str]] | None:
    url = f"{base}/api/v1/targets?state=active"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            targets = json.load(response)["data"]["activeTargets"]
    except (urllib.error.URLError, ConnectionError):
        return None
    labels = [t["labels"] for t in targets if t["labels"].get("job") == "api"]
    return labels if len(labels) == 2 else None


@pytest.mark.servers
@needs_prometheus
def test_api_relabeling_sets_replica_and_keeps_instance(tmp_path: Path) -> None:
    # What the native runner does: same api job, targets swapped for static addresses. The
    # Compose shape (one IP per replica, port 8000) and the native one (shared 127.0.0.1,
    # one port per replica) must both give every replica a distinct `replica`.
    assert PROMETHEUS is not None
    [api_job] = [job for job in load_yaml(CONFIG)["scrape_configs"] if job["job_name"] == "api"]
    del api_job["dns_sd_configs"]
    api_job["static_configs"] = [{"targets": ["10.0.0.2:8000", "127.0.0.1:8001"]}]
    api_job["scrape_interval"] = "1h"  # nothing listens there; the labels are all we need
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [api_job]}), encoding="utf-8")

    port = free_port()
    log = tmp_path / "prometheus.log"
    argv = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with background(argv, log):
        labels = None
        deadline = time.monotonic() + 20
        while labels is None and time.monotonic() < deadline:
            labels = api_target_labels(f"http://127.0.0.1:{port}")
            time.sleep(0.2)
    assert labels is not None, log.read_text(encoding="utf-8")
    assert sorted((t["instance"], t["replica"]) for t in labels) == [
        ("10.0.0.2:8000", "10.0.0.2"),
        ("127.0.0.1:8001", "127.0.0.1:8001"),
    ]


def _instant(base: str, query: str) -> list[dict[str, str]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return [r["metric"] for r in json.load(response)["data"]["result"]]


def _push(base: str, group: str, body: str) -> None:
    request = urllib.request.Request(f"{base}/metrics/{group}", data=body.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@pytest.mark.servers
@needs_prometheus
@needs_pushgateway
def test_pushgateway_job_keeps_only_the_load_tests_series(tmp_path: Path) -> None:
    """A push that claims another job (job="nginx" with `nginx_up 0` once fired StackNginxDown)
    or another metric reaches Prometheus as nothing; the load test's series arrive as the
    dashboards expect them. Real Pushgateway, real Prometheus, the job as prometheus.yml has it
    (without its credential: the relabelling is under test here, tests/e2e the auth)."""
    assert PROMETHEUS is not None
    assert PUSHGATEWAY is not None
    [job] = [j for j in load_yaml(CONFIG)["scrape_configs"] if j["job_name"] == "pushgateway"]
    del job["basic_auth"]
    gateway_port, prometheus_port = free_port(), free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    job["static_configs"] = [{"targets": [f"127.0.0.1:{gateway_port}"]}]
    job["scrape_interval"] = "1s"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}), encoding="utf-8")
    argv = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
    ]
    gateway_argv = [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{gateway_port}"]
    with (
        background([*gateway_argv, "--persistence.file="], tmp_path / "pushgateway.log"),
        background(argv, tmp_path / "prometheus.log"),
    ):
        wait_for_port(gateway_port)
        _push(gateway, "job/nginx", "nginx_up 0\n")
        _push(gateway, "job/nginx/instance/forged", "up 0\nnginx_up 0\n")
        _push(gateway, "job/pushgateway", "nginx_up 0\n")
        _push(gateway, "job/locust/run/r1", "locust_users 3\nnginx_up 0\n")
        base = f"http://127.0.0.1:{prometheus_port}"
        deadline = time.monotonic() + 30
        users: list[dict[str, str]] = []
        while not users and time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                users = _instant(base, "locust_users")
            time.sleep(0.2)
        instance = f"127.0.0.1:{gateway_port}"
        assert users == [
            {"__name__": "locust_users", "job": "locust", "run": "r1", "instance": instance}
        ]
        # Nothing pushed speaks for nginx, or for any metric but the load test's.
        assert _instant(base, "nginx_up") == []
        assert _instant(base, '{job="nginx"}') == []
        assert _instant(base, '{exported_job!=""} or {exported_instance!=""}') == []
        assert _instant(base, "push_time_seconds") == []
        # The gateway's own series stay its own, and `up` is the scrape's.
        assert _instant(base, 'pushgateway_build_info{job="pushgateway"}')
        assert [m["job"] for m in _instant(base, "up")] == ["pushgateway"]


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
