"""Generate the provisioned Grafana dashboards from code.

Grafana loads the JSON files in `services/grafana/dashboards/`; this module is their only
source. Change the panels here, run `make dashboards`, and commit code and JSON together.
`--check` (run by the static tests) fails when the committed JSON is not exactly what this code
generates, so hand edits to the JSON, or code changes without a regeneration, cannot slip through.

Every `*.json` in that folder is treated as generated: files this script no longer produces are
deleted on write and reported by `--check`.

Usage: `make dashboards` (python -m stack.grafana.build), or `--check` to exit 1 if they are stale.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableModel,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from stack.paths import GRAFANA_DIR

DASHBOARD_DIR = GRAFANA_DIR / "dashboards"

# Must equal the uid in provisioning/datasources/prometheus.yml. A fixed uid (instead of the
# datasource name or "default") keeps the dashboards portable to any Grafana that provisions the
# same datasource file.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")

# A "$__rate_interval" window always spans at least four scrapes (Grafana derives it from the
# datasource's timeInterval), so rates never go blank at any zoom level.
RATE_INTERVAL = "$__rate_interval"

# Shown on every API panel so a single replica can be isolated; "All" becomes ".*" rather than a
# regex of every currently known instance, which would silently drop replicas added later.
API = 'job="api", instance=~"$instance"'

# postgres_exporter reports one row per database plus a datname="" row for shared catalogs;
# neither that row nor template0/template1 ever sees application traffic.
PG = 'job="postgres", datname!~"template.*|"'

GRID_WIDTH = 24


def rate(selector: str) -> str:
    return f"rate({selector}[{RATE_INTERVAL}])"


def summed(inner: str, by: str = "") -> str:
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def ratio_or_zero(part: str, whole: str, by: str = "") -> str:
    """part/whole per group, 0 (not absent) for groups that have a whole but no part yet.

    Counters with a label such as status="503" only exist after the first such request, so a
    plain division would drop every handler or replica that never failed from the panel.
    """
    total = summed(rate(whole), by)
    return f"({summed(rate(part), by)} or {total} * 0) / {total}"


def rate_or_zero(part: str, whole: str, by: str = "") -> str:
    """The rate of `part` per group, 0 for groups that serve traffic but have no `part` yet."""
    return f"{summed(rate(part), by)} or {summed(rate(whole), by)} * 0"


def quantile(q: float, buckets: str, by: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, {summed(rate(buckets), group)})"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def _targets(
    queries: Sequence[Query], *, instant: bool = False
) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    targets: list[cogbuilder.Builder[cogvariants.Dataquery]] = []
    for index, query in enumerate(queries):
        target = (
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + index))
            .expr(query.expr)
            .datasource(DATASOURCE)
        )
        if query.legend:
            target = target.legend_format(query.legend)
        targets.append(target.instant() if instant else target.range())
    return targets


def _thresholds(base: str, *steps: tuple[float, str]) -> dashboard_builders.ThresholdsConfig:
    # Without explicit steps Grafana falls back to green/red-at-80, which would paint a healthy
    # request rate or byte count red.
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=None, color=base)] + [Threshold(v, c) for v, c in steps])
    )


UP_DOWN = ValueMap(
    options={
        "0": ValueMappingResult(text="down", color="red", index=0),
        "1": ValueMappingResult(text="up", color="green", index=1),
    }
)

P = TypeVar("P", timeseries.Panel, stat.Panel, statetimeline.Panel, table.Panel)


class Layout:
    """Collects panels for one dashboard and hands out their ids.

    Ids follow build order, so they are unique by construction and stay stable between runs as
    long as panels are not reordered, which keeps the committed JSON diffs small.
    """

    def __init__(
        self,
        uid: str,
        title: str,
        description: str,
        variables: Sequence[cogbuilder.Builder[VariableModel]] = (),
    ) -> None:
        self._next_id = 1
        self.builder = (
            dashboard_builders.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["fastapi-stack", "generated"])
            .time("now-1h", "now")
            .refresh("30s")
            .timezone("browser")
            .tooltip(DashboardCursorSync.CROSSHAIR)
            # Grafana itself always saves both lists, even empty; matching its shape keeps a
            # dashboard exported from the UI diffable against the generated file.
            .variables(list(variables))
            .annotations([])
        )

    def _id(self) -> int:
        panel_id = self._next_id
        self._next_id += 1
        return panel_id

    def row(self, title: str) -> None:
        self.builder = self.builder.with_row(dashboard_builders.Row(title).id(self._id()))

    def _common(
        self,
        panel: P,
        title: str,
        description: str,
        unit: str,
        queries: Sequence[Query],
        width: int,
        height: int,
        *,
        instant: bool = False,
    ) -> P:
        return (
            panel.id(self._id())
            .title(title)
            .description(description)
            .unit(unit)
            .datasource(DATASOURCE)
            .targets(_targets(queries, instant=instant))
            .span(width)
            .height(height)
        )

    def timeseries(
        self,
        title: str,
        description: str,
        unit: str,
        queries: Sequence[Query],
        *,
        width: int = 8,
        height: int = 8,
        stacked: bool = False,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> None:
        panel = self._common(timeseries.Panel(), title, description, unit, queries, width, height)
        panel = (
            panel.line_width(1)
            .fill_opacity(25 if stacked else 10)
            .show_points(common.VisibilityMode.NEVER)
            .legend(
                common_builders.VizLegendOptions()
                .show_legend(True)
                .display_mode(common.LegendDisplayMode.TABLE)
                .placement(common.LegendPlacement.BOTTOM)
                .calcs(["mean", "max", "lastNotNull"])
            )
            .tooltip(
                common_builders.VizTooltipOptions()
                .mode(common.TooltipDisplayMode.MULTI)
                .sort(common.SortOrder.DESCENDING)
            )
        )
        if stacked:
            panel = panel.stacking(
                common_builders.StackingConfig().mode(common.StackingMode.NORMAL)
            )
        if min_value is not None:
            panel = panel.min(min_value)
        if max_value is not None:
            panel = panel.max(max_value)
        self.builder = self.builder.with_panel(panel)

    def stat(
        self,
        title: str,
        description: str,
        unit: str,
        queries: Sequence[Query],
        thresholds: dashboard_builders.ThresholdsConfig,
        *,
        width: int = 5,
        height: int = 4,
        up_down: bool = False,
    ) -> None:
        panel = self._common(stat.Panel(), title, description, unit, queries, width, height)
        panel = (
            panel.reduce_options(
                common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
            )
            .graph_mode(common.BigValueGraphMode.NONE if up_down else common.BigValueGraphMode.AREA)
            .color_mode(
                common.BigValueColorMode.BACKGROUND if up_down else common.BigValueColorMode.VALUE
            )
            .text_mode(common.BigValueTextMode.AUTO)
            .thresholds(thresholds)
        )
        if up_down:
            panel = panel.mappings([UP_DOWN])
        self.builder = self.builder.with_panel(panel)

    def up_timeline(
        self, title: str, description: str, queries: Sequence[Query], *, width: int = 24
    ) -> None:
        panel = self._common(statetimeline.Panel(), title, description, "none", queries, width, 5)
        panel = (
            panel.mappings([UP_DOWN])
            .thresholds(_thresholds("red", (1, "green")))
            .show_value(common.VisibilityMode.NEVER)
            .merge_values(True)
        )
        self.builder = self.builder.with_panel(panel)

    def info_table(
        self, title: str, description: str, queries: Sequence[Query], hide: Sequence[str]
    ) -> None:
        panel = self._common(
            table.Panel(), title, description, "none", queries, GRID_WIDTH // 3, 8, instant=True
        )
        panel = panel.with_transformation(
            DataTransformerConfig(
                id_val="organize", options={"excludeByName": dict.fromkeys(hide, True)}
            )
        )
        self.builder = self.builder.with_panel(panel)

    def build(self) -> Dashboard:
        return self.builder.build()


def api_overview() -> Dashboard:
    requests = f"http_requests_total{{{API}}}"
    errors = f'http_requests_total{{{API}, status=~"5.."}}'
    buckets = f"http_request_duration_seconds_bucket{{{API}}}"
    lookups = f"api_cache_lookups_total{{{API}}}"
    hits = f'api_cache_lookups_total{{{API}, result="hit"}}'

    instance = (
        dashboard_builders.QueryVariable("instance")
        .label("Replica")
        .description("API replicas (Prometheus instance label) shown on the API panels.")
        .datasource(DATASOURCE)
        .query('label_values(up{job="api"}, instance)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(text="All", value="$__all", selected=True))
    )
    d = Layout(
        "api-overview",
        "API overview",
        "RED metrics of the FastAPI replicas by handler and by replica, plus cache, database "
        "pool and process health.",
        [instance],
    )

    d.row("Summary")
    d.stat(
        "Replicas up",
        "Scrape targets of job api that answered their last scrape (ignores the replica "
        "filter, so a dead replica is never hidden).",
        "none",
        [Query('sum(up{job="api"})', "up"), Query('count(up{job="api"})', "configured")],
        _thresholds("red", (1, "green")),
        width=GRID_WIDTH - 4 * 5,
    )
    d.stat(
        "Request rate",
        "Requests per second over all selected replicas and handlers.",
        "reqps",
        [Query(summed(rate(requests)), "requests/s")],
        _thresholds("green"),
    )
    d.stat(
        "5xx ratio",
        "Share of responses with a 5xx status.",
        "percentunit",
        [Query(ratio_or_zero(errors, requests), "5xx")],
        _thresholds("green", (0.01, "orange"), (0.05, "red")),
    )
    d.stat(
        "p95 latency",
        "95th percentile request duration over all handlers.",
        "s",
        [Query(quantile(0.95, buckets), "p95")],
        _thresholds("green", (0.25, "orange"), (1, "red")),
    )
    d.stat(
        "Cache hit ratio",
        "Item cache hits over all lookups (misses and Redis errors count against it).",
        "percentunit",
        [Query(f"{summed(rate(hits))} / {summed(rate(lookups))}", "hit ratio")],
        _thresholds("red", (0.5, "orange"), (0.8, "green")),
    )

    d.row("RED by handler")
    d.timeseries(
        "Request rate by handler",
        "Requests per second per route template; /metrics and /health/* are not counted.",
        "reqps",
        [Query(summed(rate(requests), "handler"), "{{handler}}")],
        width=12,
    )
    d.timeseries(
        "5xx ratio by handler",
        "Share of each handler's responses with a 5xx status; 0 for handlers without errors.",
        "percentunit",
        [Query(ratio_or_zero(errors, requests, "handler"), "{{handler}}")],
        width=12,
        min_value=0,
    )
    for q in (0.5, 0.95, 0.99):
        label = f"p{round(q * 100)}"
        d.timeseries(
            f"{label} latency by handler",
            f"{label} request duration per handler, from the request duration histogram.",
            "s",
            [Query(quantile(q, buckets, "handler"), "{{handler}}")],
        )

    d.row("RED by replica")
    d.timeseries(
        "Request rate by replica",
        "Requests per second each replica served; nginx should spread load evenly.",
        "reqps",
        [Query(summed(rate(requests), "instance"), "{{instance}}")],
    )
    d.timeseries(
        "Request share by replica",
        "Each replica's share of the selected replicas' requests: balanced replicas sit at "
        "1/N each.",
        "percentunit",
        [
            Query(
                f"{summed(rate(requests), 'instance')} / scalar({summed(rate(requests))})",
                "{{instance}}",
            )
        ],
        min_value=0,
    )
    d.timeseries(
        "5xx ratio by replica",
        "Share of each replica's responses with a 5xx status; one bad replica stands out here.",
        "percentunit",
        [Query(ratio_or_zero(errors, requests, "instance"), "{{instance}}")],
        min_value=0,
    )
    d.timeseries(
        "p95 latency by replica",
        "95th percentile request duration per replica.",
        "s",
        [Query(quantile(0.95, buckets, "instance"), "{{instance}}")],
        width=12,
    )
    d.timeseries(
        "5xx errors by replica",
        "5xx responses per second per replica.",
        "reqps",
        [Query(rate_or_zero(errors, requests, "instance"), "{{instance}}")],
        width=12,
    )
    d.up_timeline(
        "Replica up",
        'Whether Prometheus could scrape each replica (up{job="api"}).',
        [Query(f"up{{{API}}}", "{{instance}}")],
    )

    d.row("Status codes")
    d.timeseries(
        "Responses by status code",
        "Responses per second by exact HTTP status code.",
        "reqps",
        [Query(summed(rate(requests), "status"), "{{status}}")],
        width=12,
        stacked=True,
    )
    d.timeseries(
        "Responses by handler and status code",
        "Responses per second by handler and status, to see which route returns what.",
        "reqps",
        [Query(summed(rate(requests), "handler, status"), "{{status}} {{handler}}")],
        width=12,
    )

    d.row("Cache")
    d.timeseries(
        "Cache hit ratio",
        "Item cache hits over all lookups, overall and per replica.",
        "percentunit",
        [
            Query(f"{summed(rate(hits))} / {summed(rate(lookups))}", "all replicas"),
            Query(
                f"{summed(rate(hits), 'instance')} / {summed(rate(lookups), 'instance')}",
                "{{instance}}",
            ),
        ],
        width=12,
        min_value=0,
        max_value=1,
    )
    d.timeseries(
        "Cache lookups by result",
        "Item cache lookups per second by result; errors mean Redis failed and the API fell "
        "back to PostgreSQL.",
        "ops",
        [Query(summed(rate(lookups), "result"), "{{result}}")],
        width=12,
        stacked=True,
    )

    d.row("Database pool")
    d.timeseries(
        "DB pool size",
        "Connections each replica's SQLAlchemy pool keeps open.",
        "short",
        [Query(f"api_db_pool_size{{{API}}}", "{{instance}}")],
        min_value=0,
    )
    d.timeseries(
        "DB connections checked out",
        "Connections in use by requests; at size + max overflow, requests queue for a connection.",
        "short",
        [Query(f"api_db_pool_checked_out{{{API}}}", "{{instance}}")],
        min_value=0,
    )
    d.timeseries(
        "DB pool overflow",
        "Connections opened beyond the pool size; sustained overflow means the pool is too "
        "small for the load.",
        "short",
        [Query(f"api_db_pool_overflow{{{API}}}", "{{instance}}")],
        min_value=0,
    )

    d.row("Process")
    d.timeseries(
        "CPU by replica",
        "CPU time per second of each replica's process; 100% is one full core, the most a "
        "single-worker Uvicorn process can use.",
        "percentunit",
        [Query(rate(f"process_cpu_seconds_total{{{API}}}"), "{{instance}}")],
        min_value=0,
    )
    d.timeseries(
        "Resident memory by replica",
        "Resident set size of each replica's process.",
        "bytes",
        [Query(f"process_resident_memory_bytes{{{API}}}", "{{instance}}")],
        min_value=0,
    )
    d.info_table(
        "Build info by replica",
        "Version each replica runs, to follow a rolling deploy.",
        [Query(f"max by (instance, replica_name, version) (api_build_info{{{API}}})")],
        hide=["Time", "Value"],
    )
    return d.build()


def dependencies() -> Dashboard:
    d = Layout(
        "dependencies",
        "Nginx, Redis and PostgreSQL",
        "The services behind the API, from their Prometheus exporters, and the host from "
        "node exporter.",
    )

    d.row("Exporters")
    d.up_timeline(
        "Exporter scrape targets up",
        "Whether Prometheus could scrape each exporter; when one is down its panels below "
        "go empty.",
        [Query('up{job=~"nginx|redis|postgres|node"}', "{{job}}")],
    )

    # "or vector(0)" shows "down" rather than "No data" when the exporter itself is gone.
    d.row("nginx")
    d.stat(
        "nginx up",
        "Whether nginx-prometheus-exporter could read nginx's stub_status.",
        "none",
        [Query('min(nginx_up{job="nginx"}) or vector(0)', "nginx")],
        _thresholds("red", (1, "green")),
        width=4,
        height=8,
        up_down=True,
    )
    d.timeseries(
        "nginx connections",
        "Client connections by state, from stub_status.",
        "short",
        [
            Query(f'sum(nginx_connections_{state}{{job="nginx"}})', state)
            for state in ("active", "reading", "writing", "waiting")
        ],
        width=10,
        min_value=0,
    )
    d.timeseries(
        "nginx request rate",
        "Requests per second nginx handled, including health checks and errors it answered itself.",
        "reqps",
        [Query(summed(rate('nginx_http_requests_total{job="nginx"}')), "requests/s")],
        width=10,
        min_value=0,
    )

    d.row("Redis")
    d.stat(
        "Redis up",
        "Whether redis_exporter could reach Redis.",
        "none",
        [Query('min(redis_up{job="redis"}) or vector(0)', "redis")],
        _thresholds("red", (1, "green")),
        width=4,
        height=8,
        up_down=True,
    )
    d.timeseries(
        "Redis commands per second",
        "Commands Redis processed per second.",
        "ops",
        [Query(summed(rate('redis_commands_processed_total{job="redis"}')), "commands/s")],
        width=10,
        min_value=0,
    )
    d.timeseries(
        "Redis connected clients",
        "Client connections, including every API replica's pool.",
        "short",
        [Query('sum(redis_connected_clients{job="redis"})', "clients")],
        width=10,
        min_value=0,
    )
    d.timeseries(
        "Redis memory used",
        "Memory Redis allocated for data and overhead.",
        "bytes",
        [Query('sum(redis_memory_used_bytes{job="redis"})', "used")],
        min_value=0,
    )
    redis_hits = summed(rate('redis_keyspace_hits_total{job="redis"}'))
    redis_misses = summed(rate('redis_keyspace_misses_total{job="redis"}'))
    d.timeseries(
        "Redis keyspace hits and misses",
        "Key lookups per second that found (hit) or did not find (miss) a key.",
        "ops",
        [Query(redis_hits, "hits"), Query(redis_misses, "misses")],
        min_value=0,
    )
    d.timeseries(
        "Redis keyspace hit ratio",
        "Hits over all key lookups.",
        "percentunit",
        [Query(f"{redis_hits} / ({redis_hits} + {redis_misses})", "hit ratio")],
        min_value=0,
        max_value=1,
    )
    d.timeseries(
        "Redis evicted keys",
        "Keys evicted per second because maxmemory was reached; cache entries are meant to "
        "expire by TTL, not be evicted.",
        "cps",
        [Query(summed(rate('redis_evicted_keys_total{job="redis"}')), "evictions/s")],
        width=12,
        min_value=0,
    )
    d.timeseries(
        "Redis keys",
        "Keys stored over all databases.",
        "short",
        [Query('sum(redis_db_keys{job="redis"})', "keys")],
        width=12,
        min_value=0,
    )

    d.row("PostgreSQL")
    d.stat(
        "PostgreSQL up",
        "Whether postgres_exporter could connect to PostgreSQL.",
        "none",
        [Query('min(pg_up{job="postgres"}) or vector(0)', "postgres")],
        _thresholds("red", (1, "green")),
        width=4,
        height=8,
        up_down=True,
    )
    d.timeseries(
        "PostgreSQL backends",
        "Server processes connected to each database, against max_connections.",
        "short",
        [
            Query(f"sum by (datname) (pg_stat_database_numbackends{{{PG}}})", "{{datname}}"),
            Query('max(pg_settings_max_connections{job="postgres"})', "max_connections"),
        ],
        width=10,
        min_value=0,
    )
    d.timeseries(
        "PostgreSQL commits",
        "Committed transactions per second per database.",
        "ops",
        [Query(summed(rate(f"pg_stat_database_xact_commit{{{PG}}}"), "datname"), "{{datname}}")],
        width=10,
        min_value=0,
    )
    d.timeseries(
        "PostgreSQL rollbacks",
        "Rolled-back transactions per second per database; the API rolls back on errors, so "
        "a rise here follows 5xx or constraint violations.",
        "ops",
        [Query(summed(rate(f"pg_stat_database_xact_rollback{{{PG}}}"), "datname"), "{{datname}}")],
    )
    blks_hit = summed(rate(f"pg_stat_database_blks_hit{{{PG}}}"), "datname")
    blks_read = summed(rate(f"pg_stat_database_blks_read{{{PG}}}"), "datname")
    d.timeseries(
        "PostgreSQL buffer cache hit ratio",
        "Block reads served from shared buffers rather than from disk or the OS cache.",
        "percentunit",
        [Query(f"{blks_hit} / ({blks_hit} + {blks_read})", "{{datname}}")],
        min_value=0,
        max_value=1,
    )
    d.timeseries(
        "PostgreSQL deadlocks",
        "Deadlocks detected per rate interval; any non-zero value is worth a look.",
        "short",
        [
            Query(
                f"sum by (datname) (increase(pg_stat_database_deadlocks{{{PG}}}[{RATE_INTERVAL}]))",
                "{{datname}}",
            )
        ],
        min_value=0,
    )

    idle = 'node_cpu_seconds_total{job="node", mode="idle"}'
    mem_total = 'node_memory_MemTotal_bytes{job="node"}'
    mem_available = 'node_memory_MemAvailable_bytes{job="node"}'
    d.row("Host")
    d.timeseries(
        "Host CPU busy",
        "Share of CPU time not idle, averaged over all cores.",
        "percentunit",
        [
            Query(
                f"1 - avg by (instance) ({rate(idle)})",
                "{{instance}}",
            )
        ],
        min_value=0,
        max_value=1,
    )
    d.timeseries(
        "Host memory",
        "Memory in use (total minus available) against total memory.",
        "bytes",
        [
            Query(f"{mem_total} - {mem_available}", "used {{instance}}"),
            Query(mem_total, "total {{instance}}"),
        ],
        min_value=0,
    )
    d.timeseries(
        "Host load average",
        "Run-queue load averages against the number of CPUs.",
        "short",
        [
            *(
                Query(f'node_load{minutes}{{job="node"}}', f"load{minutes} {{{{instance}}}}")
                for minutes in (1, 5, 15)
            ),
            Query(f"count by (instance) ({idle})", "CPUs {{instance}}"),
        ],
        min_value=0,
    )
    return d.build()


# Locust's numbers come through the Pushgateway (job="locust", one `run` label per load test) and
# exist only while a test runs; loadtest/ deletes its group at the end, so outside a test these
# panels are empty by design. The API panels beside them are the server's view of the same load.
LOCUST_REQUESTS = "locust_requests_total"
LOCUST_FAILURES = "locust_failures_total"
LOCUST_LATENCY = "locust_response_time_seconds"


def load_test() -> Dashboard:
    requests = 'http_requests_total{job="api"}'
    errors = 'http_requests_total{job="api", status=~"5.."}'
    buckets = 'http_request_duration_seconds_bucket{job="api"}'
    lookups = 'api_cache_lookups_total{job="api"}'
    hits = 'api_cache_lookups_total{job="api", result="hit"}'
    client_rate = summed(rate(LOCUST_REQUESTS))
    d = Layout(
        "loadtest",
        "Load test",
        "A running load test (make loadtest): Locust's live numbers, pushed through the "
        "Pushgateway, beside the API's own. Test windows are marked by annotations tagged "
        "loadtest.",
    )
    d.builder = (
        d.builder.time("now-15m", "now")
        .refresh("10s")
        .annotations(
            [
                dashboard_builders.AnnotationQuery()
                .name("Load tests")
                .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                .enable(True)
                .icon_color("purple")
                .target(
                    dashboard_builders.AnnotationTarget()
                    .type("tags")
                    .tags(["loadtest"])
                    .match_any(True)
                    .limit(100)
                )
            ]
        )
    )

    d.row("Locust (client)")
    d.stat(
        "Users",
        "Simulated users running now.",
        "none",
        [Query("sum(locust_users)", "users")],
        _thresholds("blue"),
        width=6,
    )
    d.stat(
        "Workers",
        "Locust worker processes connected to the master.",
        "none",
        [Query("sum(locust_workers)", "workers")],
        _thresholds("blue"),
        width=6,
    )
    d.stat(
        "Request rate (client)",
        "Requests per second Locust sends.",
        "reqps",
        [Query(client_rate, "requests/s")],
        _thresholds("green"),
        width=6,
    )
    d.stat(
        "Failure ratio (client)",
        "Requests with an answer the scenario did not expect; deliberate 4xx are not failures.",
        "percentunit",
        [Query(f"{summed(rate(LOCUST_FAILURES))} / {client_rate}", "failures")],
        _thresholds("green", (0.001, "orange"), (0.01, "red")),
        width=6,
    )
    d.timeseries(
        "Request rate: client and server",
        "What Locust sends against what the API replicas count; a gap is traffic that nginx "
        "answered itself (429, 413, 502) or that never arrived.",
        "reqps",
        [Query(client_rate, "client (Locust)"), Query(summed(rate(requests)), "server (API)")],
        width=12,
        min_value=0,
    )
    d.timeseries(
        "Latency: client and server",
        "Locust's percentiles over its last 10 s (nginx and the network included) against the "
        "API's own from its histogram.",
        "s",
        [
            Query(
                f'max by (quantile) ({LOCUST_LATENCY}{{name="Aggregated"}})',
                "client p{{quantile}}",
            ),
            Query(quantile(0.95, buckets), "server p0.95"),
            Query(quantile(0.99, buckets), "server p0.99"),
        ],
        width=12,
        min_value=0,
    )
    d.timeseries(
        "Users",
        "Simulated users over time, as Locust ramps them up and stops them.",
        "none",
        [Query("sum(locust_users)", "users")],
        min_value=0,
    )
    d.timeseries(
        "Failures (client) and 5xx (server)",
        "Unexpected answers per second as Locust saw them, and 5xx the API returned.",
        "reqps",
        [
            Query(summed(rate(LOCUST_FAILURES)), "client failures"),
            Query(rate_or_zero(errors, requests), "server 5xx"),
        ],
        min_value=0,
    )
    d.timeseries(
        "Failures by request (client)",
        "Unexpected answers per second, by Locust request name.",
        "reqps",
        [Query(summed(rate(LOCUST_FAILURES), "method, name"), "{{method}} {{name}}")],
        min_value=0,
    )

    d.row("By request (client)")
    d.timeseries(
        "Request rate by request (client)",
        "Requests per second by Locust request name; names are route templates, a note in "
        "parentheses marks a deliberate bad request.",
        "reqps",
        [Query(summed(rate(LOCUST_REQUESTS), "method, name"), "{{method}} {{name}}")],
        width=12,
        min_value=0,
    )
    d.timeseries(
        "p95 by request (client)",
        "Locust's 95th percentile over its last 10 s, by request name.",
        "s",
        [
            Query(
                f'max by (method, name) ({LOCUST_LATENCY}{{quantile="0.95", name!="Aggregated"}})',
                "{{method}} {{name}}",
            )
        ],
        width=12,
        min_value=0,
    )

    d.row("The API under load (server)")
    d.timeseries(
        "p95 latency by handler (server)",
        "95th percentile request duration per handler, from the API's histogram.",
        "s",
        [Query(quantile(0.95, buckets, "handler"), "{{handler}}")],
        min_value=0,
    )
    d.timeseries(
        "Request share by replica",
        "Each replica's share of the API's requests: balanced replicas sit at 1/N each.",
        "percentunit",
        [
            Query(
                f"{summed(rate(requests), 'instance')} / scalar({summed(rate(requests))})",
                "{{instance}}",
            )
        ],
        min_value=0,
    )
    d.timeseries(
        "CPU by replica",
        "CPU time per second of each replica's process; 100% is one core, all a single Uvicorn "
        "worker can use.",
        "percentunit",
        [Query(rate('process_cpu_seconds_total{job="api"}'), "{{instance}}")],
        min_value=0,
    )
    d.timeseries(
        "Cache hit ratio",
        "Item cache hits over all lookups during the load.",
        "percentunit",
        [Query(f"{summed(rate(hits))} / {summed(rate(lookups))}", "hit ratio")],
        width=12,
        min_value=0,
        max_value=1,
    )
    d.timeseries(
        "DB connections checked out",
        "Connections in use per replica against the pool size; at size plus overflow, requests "
        "queue for a connection.",
        "short",
        [
            Query('api_db_pool_checked_out{job="api"}', "{{instance}}"),
            Query('max(api_db_pool_size{job="api"})', "pool size"),
        ],
        width=12,
        min_value=0,
    )
    return d.build()


DASHBOARDS = (api_overview, dependencies, load_test)


def render(dashboard: Dashboard) -> str:
    # Sorted keys keep the files stable even if an SDK release reorders its serialisation.
    return json.dumps(dashboard, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text for every dashboard, keyed by the dashboard's uid."""
    files: dict[str, str] = {}
    for build in DASHBOARDS:
        dashboard = build()
        if dashboard.uid is None:
            raise ValueError(f"{build.__name__}() built a dashboard without a uid")
        files[f"{dashboard.uid}.json"] = render(dashboard)
    return files


def check(directory: Path, expected: dict[str, str]) -> list[str]:
    """Human-readable differences between `directory` and the generated files (empty if none)."""
    problems: list[str] = []
    for name, text in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = path.read_text(encoding="utf-8")
        if actual != text:
            diff = list(
                difflib.unified_diff(
                    actual.splitlines(),
                    text.splitlines(),
                    f"committed/{name}",
                    f"generated/{name}",
                    lineterm="",
                    n=1,
                )
            )
            changed = sum(
                1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))
            )
            shown = "\n".join(diff[:40]) + ("\n  ..." if len(diff) > 40 else "")
            problems.append(f"{name}: differs ({changed} changed lines)\n{shown}")
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            problems.append(f"{path.name}: not generated by this script")
    return problems


def write(directory: Path, expected: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in expected.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            path.unlink()
            print(f"removed {path} (no longer generated)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed JSON differs from the generated JSON",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DASHBOARD_DIR,
        help=f"where the dashboard JSON lives (default: {DASHBOARD_DIR})",
    )
    args = parser.parse_args(argv)
    expected = generate()
    if args.check:
        problems = check(args.output_dir, expected)
        if problems:
            print(
                f"{len(problems)} dashboard file(s) out of date; run `make dashboards`:",
                file=sys.stderr,
            )
            for problem in problems:
                print(f"- {problem}", file=sys.stderr)
            return 1
        print(f"{len(expected)} dashboard(s) up to date in {args.output_dir}")
        return 0
    write(args.output_dir, expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
