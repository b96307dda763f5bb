"""Every PromQL query of the provisioned dashboards, ready to send to Prometheus as is.

Reads the committed JSON in `dashboards/` (what Grafana actually loads, not what the generator
would produce) and replaces Grafana's template variables the way Grafana would with the
dashboard's default selection, so the static tests can syntax-check the queries with promtool and
an end-to-end test can evaluate each one against a live Prometheus.

It needs no Grafana SDK: only the JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from stack.paths import GRAFANA_DIR

DASHBOARD_DIR = GRAFANA_DIR / "dashboards"

# Grafana's own variable syntaxes: $name, ${name}, ${name:format} and the deprecated [[name]].
# `$1`-style capture references (label_replace) do not start with a letter or `_` and are kept.
VARIABLE = re.compile(r"\$([A-Za-z_]\w*)|\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\[\[([A-Za-z_]\w*)\]\]")


class PanelQuery(NamedTuple):
    dashboard_uid: str
    panel_title: str
    expr: str


def load_dashboards(directory: Path = DASHBOARD_DIR) -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))
    ]


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, rows included, also those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def default_variable_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """What each template variable expands to with its default ("current") selection.

    "All" expands to the variable's allValue. Without an allValue Grafana would expand it to the
    options it discovered at load time, which no offline tool can know, so that is an error.
    """
    values: dict[str, str] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        current = variable.get("current", {}).get("value")
        selected = current if isinstance(current, list) else [current]
        if "$__all" in selected:
            if not variable.get("allValue"):
                raise ValueError(f"variable ${name} defaults to All but has no allValue")
            values[name] = variable["allValue"]
        elif len(selected) == 1 and isinstance(selected[0], str):
            values[name] = selected[0]
        elif selected and all(isinstance(value, str) for value in selected):
            values[name] = "(" + "|".join(re.escape(value) for value in selected) + ")"
        else:
            raise ValueError(f"variable ${name} has no default value")
    return values


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with every Grafana variable replaced; unknown variables are an error."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(replace, expr)


def panel_queries(
    directory: Path = DASHBOARD_DIR,
    *,
    rate_interval: str = "1m",
    interval: str = "15s",
    time_range: str = "1h",
) -> list[PanelQuery]:
    """One entry per Prometheus target of every panel, variables substituted.

    The built-in durations stand in for what Grafana computes per request: $__rate_interval is
    at least four scrape intervals (1m with the stack's 15 s scrapes), $__interval follows the
    zoom level, $__range is the dashboard's time range (1 h by default).
    """
    builtins = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__range": time_range,
    }
    queries: list[PanelQuery] = []
    for dashboard in load_dashboards(directory):
        values = {**builtins, **default_variable_values(dashboard)}
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr:
                    queries.append(
                        PanelQuery(dashboard["uid"], panel["title"], substitute(expr, values))
                    )
    return queries


if __name__ == "__main__":
    for query in panel_queries():
        print(f"{query.dashboard_uid} | {query.panel_title} | {query.expr}")
