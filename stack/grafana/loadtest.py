"""Load test: Locust's live numbers beside the API's own during `make loadtest`."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models.dashboard import Dashboard, DataSourceRef

from stack.grafana.layout import Layout, Query, quantile, rate, rate_or_zero, summed, thresholds

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
        thresholds("blue"),
        width=6,
    )
    d.stat(
        "Workers",
        "Locust worker processes connected to the master.",
        "none",
        [Query("sum(locust_workers)", "workers")],
        thresholds("blue"),
        width=6,
    )
    d.stat(
        "Request rate (client)",
        "Requests per second Locust sends.",
        "reqps",
        [Query(client_rate, "requests/s")],
        thresholds("green"),
        width=6,
    )
    d.stat(
        "Failure ratio (client)",
        "Requests with an answer the scenario did not expect; deliberate 4xx are not failures.",
        "percentunit",
        [Query(f"{summed(rate(LOCUST_FAILURES))} / {client_rate}", "failures")],
        thresholds("green", (0.001, "orange"), (0.01, "red")),
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
