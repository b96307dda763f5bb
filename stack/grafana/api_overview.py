"""API overview: RED metrics of the replicas by handler and by replica, cache, pool, process."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from stack.grafana.layout import (
    API,
    DATASOURCE,
    GRID_WIDTH,
    PG,
    Layout,
    Query,
    quantile,
    rate,
    rate_or_zero,
    ratio_or_zero,
    summed,
    thresholds,
)
from stack.grafana.slo import AVAILABILITY, TIERS


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

    d.alert_annotations()
    # The summary reads each value now (instant queries): reduced from a range, a stat keeps
    # showing the last healthy value after the series stop, which is exactly during an outage.
    d.row("Summary")
    d.stat(
        "Replicas up",
        "Replicas that answered their last scrape, and discovered ones that did not (ignores "
        "the replica filter, so a dead replica is never hidden). 0 when none is discovered; a "
        "replica that left DNS is counted by StackApiReplicasBelowExpected.",
        "none",
        [
            Query('count(up{job="api"} == 1) or vector(0)', "up"),
            Query('count(up{job="api"} == 0) or vector(0)', "down"),
        ],
        thresholds("red", (1, "green")),
        width=GRID_WIDTH - 4 * 5,
        instant=True,
    )
    d.stat(
        "Request rate",
        "Requests per second over all selected replicas and handlers; 0 when none arrive.",
        "reqps",
        [Query(f"{summed(rate(requests))} or vector(0)", "requests/s")],
        thresholds("green"),
        instant=True,
    )
    # The colours are the availability SLO's: above its budget (0.1%) the budget burns; at 6x
    # the budget (0.6%) the 6h burn-rate alert pages.
    d.stat(
        "5xx ratio",
        "Share of responses with a 5xx status over the rate interval. Orange above the "
        "availability SLO's error budget (burning it), red from the 6x burn rate that pages.",
        "percentunit",
        [Query(ratio_or_zero(errors, requests), "5xx")],
        thresholds(
            "green", (AVAILABILITY.budget, "orange"), (TIERS[1].factor * AVAILABILITY.budget, "red")
        ),
        instant=True,
        no_value="no requests",
    )
    d.stat(
        "p95 latency",
        "95th percentile request duration over all handlers; orange past the latency SLO's 250 ms.",
        "s",
        [Query(quantile(0.95, buckets), "p95")],
        thresholds("green", (0.25, "orange"), (1, "red")),
        instant=True,
        no_value="no requests",
    )
    d.stat(
        "Cache hit ratio",
        "Item cache hits over all lookups (misses and Redis errors count against it).",
        "percentunit",
        [Query(f"{summed(rate(hits))} / {summed(rate(lookups))}", "hit ratio")],
        thresholds("red", (0.5, "orange"), (0.8, "green")),
        instant=True,
        no_value="no lookups",
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
    # The pool's configured size is not what it holds open: SQLAlchemy opens connections on
    # demand. PostgreSQL counts what is open, per database, for every replica together.
    d.timeseries(
        "DB connections open",
        "Connections open to each database as PostgreSQL counts them (every replica's pool, "
        "plus the exporter's one), against what the pools use and their configured size.",
        "short",
        [
            Query(f"sum by (datname) (pg_stat_database_numbackends{{{PG}}})", "open {{datname}}"),
            Query(f"sum(api_db_pool_checked_out{{{API}}})", "checked out"),
            Query(f"sum(api_db_pool_size{{{API}}})", "pool size"),
        ],
        min_value=0,
    )
    d.timeseries(
        "DB connections checked out",
        "Connections in use by requests, per replica, against the pool size; at size + max "
        "overflow, requests queue for a connection.",
        "short",
        [
            Query(f"api_db_pool_checked_out{{{API}}}", "{{instance}}"),
            Query(f"max(api_db_pool_size{{{API}}})", "pool size"),
        ],
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
