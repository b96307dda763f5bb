"""Static checks of the Grafana provisioning and the generated dashboards (no Grafana needed).

The PromQL checks need promtool (Debian package `prometheus`); they are skipped without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.grafana import panel_queries
from stack.monitoring_auth import SETTING, USER
from stack.paths import GRAFANA_DIR, REPO_ROOT

GRAFANA = GRAFANA_DIR
DASHBOARD_DIR = GRAFANA / "dashboards"
DATASOURCES_YML = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_YML = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
CONTRACT = REPO_ROOT / "docs" / "CONTRACT.md"

DATASOURCE_UID = "prometheus"
DASHBOARDS = {
    "api-overview": "API overview",
    "dependencies": "Nginx, Redis and PostgreSQL",
    "loadtest": "Load test",
    "slo": "SLOs",
}
JOBS = {"api", "nginx", "redis", "postgres", "node", "alertmanager", "prometheus"}

# Named in docs/CONTRACT.md (checked below, so a renamed metric fails here, not in Grafana).
API_METRICS = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "api_cache_lookups_total",
    "api_db_pool_size",
    "api_db_pool_checked_out",
    "api_db_pool_overflow",
    "api_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
}
# Seen on /metrics of the Debian bookworm exporters (nginx-prometheus-exporter 0.11.0,
# redis_exporter 1.45.0, postgres_exporter 0.11.1, node_exporter 1.5.0) with their targets up.
EXPORTER_METRICS = {
    "nginx_up",
    "nginx_connections_active",
    "nginx_connections_reading",
    "nginx_connections_writing",
    "nginx_connections_waiting",
    "nginx_http_requests_total",
    "redis_up",
    "redis_connected_clients",
    "redis_memory_used_bytes",
    "redis_commands_processed_total",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
    "redis_evicted_keys_total",
    "redis_db_keys",
    "pg_up",
    "pg_settings_max_connections",
    "pg_stat_database_numbackends",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read",
    "pg_stat_database_deadlocks",
    "node_cpu_seconds_total",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_load1",
    "node_load5",
    "node_load15",
}
# Pushed by Locust's master during a load test (loadtest/export.py), also in docs/CONTRACT.md.
LOADTEST_METRICS = {
    "locust_users",
    "locust_workers",
    "locust_requests_total",
    "locust_failures_total",
    "locust_response_time_seconds",
}
# Prometheus's own: the alerts it holds.
PROMETHEUS_METRICS = {"ALERTS"}
RULES_DIR = REPO_ROOT / "services" / "prometheus" / "rules"
# What the recording rules record; the SLO dashboard reads the SLIs the alerts evaluate.
RECORDED = {
    rule["record"]
    for path in RULES_DIR.glob("*_recording.yml")
    for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    for rule in group["rules"]
}
KNOWN_METRICS = (
    {"up"} | API_METRICS | EXPORTER_METRICS | LOADTEST_METRICS | PROMETHEUS_METRICS | RECORDED
)


def _dashboards() -> list[dict[str, Any]]:
    dashboards: list[dict[str, Any]] = panel_queries.load_dashboards(DASHBOARD_DIR)
    return dashboards


def _run_generator(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack.grafana.build", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _visual_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panel_queries.iter_panels(dashboard) if p.get("type") != "row"]


# --- generator -------------------------------------------------------------------------------


def test_committed_json_is_what_the_generator_produces() -> None:
    result = _run_generator("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    for path in DASHBOARD_DIR.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    edited = tmp_path / "api-overview.json"
    edited.write_text(edited.read_text().replace('"API overview"', '"Hand edited"'))
    (tmp_path / "stray.json").write_text("{}\n")

    result = _run_generator("--check", "--output-dir", tmp_path)

    assert result.returncode == 1
    assert "api-overview.json: differs" in result.stderr
    assert "stray.json: not generated" in result.stderr
    assert "dependencies.json" not in result.stderr


# --- dashboard structure ---------------------------------------------------------------------


def test_dashboard_files_and_uids() -> None:
    dashboards = _dashboards()
    assert {d["uid"]: d["title"] for d in dashboards} == DASHBOARDS
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted(
        f"{uid}.json" for uid in DASHBOARDS
    )


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_panels_are_complete(uid: str) -> None:
    (dashboard,) = (d for d in _dashboards() if d["uid"] == uid)
    panels = list(panel_queries.iter_panels(dashboard))
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert all(panel.get("title") for panel in panels)

    visual = _visual_panels(dashboard)
    assert visual
    for panel in visual:
        where = f"{uid} / {panel['title']}"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_UID, where
        targets = panel.get("targets", [])
        assert targets, f"{where}: no targets"
        ref_ids = [target.get("refId") for target in targets]
        assert all(ref_ids), f"{where}: target without refId"
        assert len(ref_ids) == len(set(ref_ids)), f"{where}: duplicate refIds {ref_ids}"
        for target in targets:
            assert target.get("datasource", {}).get("uid") == DATASOURCE_UID, where
            assert target.get("expr", "").strip(), f"{where}: target {target['refId']} no expr"


def test_variables_use_the_prometheus_datasource() -> None:
    for dashboard in _dashboards():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == DATASOURCE_UID


def test_panels_stay_on_the_grid() -> None:
    for dashboard in _dashboards():
        for panel in panel_queries.iter_panels(dashboard):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (dashboard["uid"], panel["title"])


# --- queries ---------------------------------------------------------------------------------


def _raw_exprs() -> list[tuple[str, str, str]]:
    return [
        (dashboard["uid"], panel["title"], target["expr"])
        for dashboard in _dashboards()
        for panel in _visual_panels(dashboard)
        for target in panel["targets"]
    ]


def test_rates_use_the_rate_interval() -> None:
    # A fixed window would show gaps when zoomed in and miss spikes when zoomed out.
    for uid, title, expr in _raw_exprs():
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window == "$__rate_interval", f"{uid} / {title}: [{window}]"


def test_panel_queries_cover_every_target_and_substitute_variables() -> None:
    queries = panel_queries.panel_queries(DASHBOARD_DIR)
    assert len(queries) == len(_raw_exprs())
    assert {q.dashboard_uid for q in queries} == set(DASHBOARDS)
    for query in queries:
        assert "$" not in query.expr, query
        assert "[[" not in query.expr, query
    assert any('instance=~".*"' in q.expr for q in queries)
    assert all("[1m]" in q.expr for q in queries if "rate(" in q.expr)


def test_substitution_refuses_what_it_cannot_know() -> None:
    with pytest.raises(ValueError, match="unknown Grafana variable"):
        panel_queries.substitute('up{instance=~"$nope"}', {})
    assert panel_queries.substitute('x{a="${v:regex}", b="[[v]]"}', {"v": "1"}) == 'x{a="1", b="1"}'
    no_all_value = {
        "templating": {"list": [{"name": "v", "current": {"value": ["$__all"]}, "allValue": None}]}
    }
    with pytest.raises(ValueError, match="no allValue"):
        panel_queries.default_variable_values(no_all_value)


KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression; good enough for the queries in these dashboards."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", stripped)
    stripped = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped
    )
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", stripped):
        name, is_call = match.groups()
        if not is_call and name not in KEYWORDS:
            names.add(name)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{job="api", s=~"5.."}[1m]))) '
        "/ on(instance) group_left b or vector(0) * 1e3"
    )
    assert _metric_names(expr) == {"a_bucket", "b"}


def test_queries_use_known_metrics_and_jobs() -> None:
    contract = CONTRACT.read_text(encoding="utf-8")
    for name in API_METRICS | LOADTEST_METRICS:
        assert name in contract, f"{name} is no longer in docs/CONTRACT.md"
    for uid, title, expr in _raw_exprs():
        unknown = _metric_names(expr) - KNOWN_METRICS
        assert not unknown, f"{uid} / {title}: unknown metrics {unknown} in {expr}"
        for jobs in re.findall(r'\bjob=~?"([^"]*)"', expr):
            assert set(jobs.split("|")) <= JOBS, f"{uid} / {title}: job {jobs!r}"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path


def _check_as_rules(
    promtool: str, exprs: list[str], directory: Path
) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "grafana-dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query:{index}", "expr": expr}
                    for index, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = directory / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = [query.expr for query in panel_queries.panel_queries(DASHBOARD_DIR)]
    result = _check_as_rules(promtool, exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@pytest.mark.parametrize(
    "broken",
    [
        'sum(rate(http_requests_total{job="api"}[1m])',
        'rate(http_requests_total{job="api"}[1m)',
        "histogram_quantile(0.95, sum by (le) http_request_duration_seconds_bucket)",
        # What an unsubstituted Grafana variable looks like to Prometheus.
        'rate(http_requests_total{job="api"}[$__rate_interval])',
    ],
)
def test_promtool_check_rejects_invalid_promql(promtool: str, tmp_path: Path, broken: str) -> None:
    result = _check_as_rules(promtool, ["up", broken], tmp_path)
    assert result.returncode != 0, result.stdout
    assert "could not parse expression" in result.stdout + result.stderr


# --- provisioning ----------------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    config = yaml.safe_load(DATASOURCES_YML.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    (datasource,) = config["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == DATASOURCE_UID
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    # Prometheus answers only with the monitoring credential. Grafana sends it server-side
    # (proxy), the password interpolated from its environment into the encrypted secureJsonData,
    # never written here; Compose hands Grafana that variable (tests/static/test_compose.py).
    assert datasource["access"] == "proxy"
    assert datasource["basicAuth"] is True
    assert datasource["basicAuthUser"] == USER
    assert datasource["secureJsonData"] == {"basicAuthPassword": f"${{{SETTING}}}"}
    assert "basicAuthPassword" not in datasource.get("jsonData", {})


def test_dashboard_provisioning() -> None:
    config = yaml.safe_load(DASHBOARDS_YML.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "FastAPI stack"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
