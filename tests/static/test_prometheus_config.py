"""Static checks of services/prometheus/prometheus.yml: scrape config and relabeling, the
Pushgateway's limits, checked by promtool and by a real Prometheus where one is installed."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from stack.paths import REPO_ROOT
from stack.procs import free_port, wait_for_port
from stack.testing.prometheus_rules import (
    CONFIG,
    MONITORING_AUTH,
    PROBER,
    PROBES,
    PROMETHEUS,
    PUSHGATEWAY,
    RULE_FILES,
    STATIC_TARGETS,
    load_yaml,
    needs_prometheus,
    needs_promtool,
    needs_pushgateway,
    run_promtool,
)
from stack.testing.tools import background, output


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
