"""What the panels mean, as the 2026-11-30 review of the dashboards asked: values now rather than
the last healthy one, zero rather than no data, the SLO's own objectives and thresholds, alert
annotations. The dashboards' structure and queries are checked in test_grafana_dashboards.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from stack.grafana import panel_queries
from stack.grafana import slo as slo_dashboard
from stack.grafana.layout import DATASOURCE
from stack.paths import GRAFANA_DIR, REPO_ROOT

RULES_DIR = REPO_ROOT / "services" / "prometheus" / "rules"


def _panel(uid: str, title: str) -> dict[str, Any]:
    (dashboard,) = (
        d for d in panel_queries.load_dashboards(GRAFANA_DIR / "dashboards") if d["uid"] == uid
    )
    (panel,) = (p for p in panel_queries.iter_panels(dashboard) if p.get("title") == title)
    return panel


@pytest.mark.parametrize("title", ["Replicas up", "Request rate", "5xx ratio", "p95 latency"])
def test_summary_stats_read_the_value_now(title: str) -> None:
    # Reduced from a range query with lastNotNull, a stat showed the last healthy value while
    # every replica was gone (defect 5).
    panel = _panel("api-overview", title)
    assert all(target.get("instant") is True for target in panel["targets"]), title
    assert all(target.get("range") is not True for target in panel["targets"]), title


@pytest.mark.parametrize("title", ["Replicas up", "Request rate"])
def test_counts_read_zero_not_no_data_when_targets_vanish(title: str) -> None:
    panel = _panel("api-overview", title)
    assert all(t["expr"].endswith("or vector(0)") for t in panel["targets"]), panel["targets"]
    # "configured" counted discovered targets, whatever answered or not.
    assert all('count(up{job="api"})' not in t["expr"] for t in panel["targets"])


def _budget_and_tiers() -> tuple[dict[str, float], dict[str, list[tuple[str, str, float, str]]]]:
    """Error budgets and burn-rate tiers (long, short, factor, severity) from slo_alerts.yml."""
    budgets: dict[str, float] = {}
    tiers: dict[str, list[tuple[str, str, float, str]]] = {}
    rules = yaml.safe_load((RULES_DIR / "slo_alerts.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            slo = rule["labels"]["slo"]
            windows = re.findall(r"ratio_rate(\w+)\{", rule["expr"])
            [(budget, factor)] = set(re.findall(r"/ ([\d.]+) > ([\d.]+)", rule["expr"]))
            budgets[slo] = float(budget)
            severity = {"critical": "page", "warning": "ticket"}[rule["labels"]["severity"]]
            tiers.setdefault(slo, []).append((windows[0], windows[1], float(factor), severity))
    return budgets, tiers


def test_slo_dashboard_uses_the_alerts_objectives_and_tiers() -> None:
    budgets, tiers = _budget_and_tiers()
    assert {s.name: s.budget for s in slo_dashboard.SLOS} == budgets
    ours = [(t.long, t.short, t.factor, t.severity) for t in slo_dashboard.TIERS]
    assert tiers == {name: ours for name in budgets}


def test_5xx_ratio_stat_is_coloured_by_the_slo() -> None:
    # Green below 1% while 0.6% is a 6x burn that pages (defect 6).
    budgets, tiers = _budget_and_tiers()
    page_6h = next(factor for long, _, factor, _ in tiers["availability"] if long == "6h")
    steps = _panel("api-overview", "5xx ratio")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [
        None, budgets["availability"], pytest.approx(page_6h * budgets["availability"]),
    ]  # fmt: skip
    assert steps[-1]["color"] == "red"


def test_deadlocks_are_counted_not_extrapolated() -> None:
    # increase() over the zoom's window read one deadlock as about 1.3 (defect 10).
    [target] = _panel("dependencies", "PostgreSQL deadlocks")["targets"]
    assert "increase(" not in target["expr"]
    assert "rate(" not in target["expr"]


def test_pool_panel_shows_open_connections_not_the_configured_size() -> None:
    exprs = [t["expr"] for t in _panel("api-overview", "DB connections open")["targets"]]
    assert any("pg_stat_database_numbackends" in expr for expr in exprs), exprs


@pytest.mark.parametrize("uid", ["api-overview", "slo"])
def test_firing_alerts_are_annotated_on_the_time_series(uid: str) -> None:
    (dashboard,) = (
        d for d in panel_queries.load_dashboards(GRAFANA_DIR / "dashboards") if d["uid"] == uid
    )
    [annotation] = dashboard["annotations"]["list"]
    assert annotation["datasource"]["uid"] == DATASOURCE.uid
    assert annotation["expr"].startswith('ALERTS{alertstate="firing"')
