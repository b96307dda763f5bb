"""Nginx, Redis and PostgreSQL: the services behind the API, and the host."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from stack.grafana.layout import PG, Layout, Query, rate, summed, thresholds


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
        thresholds("red", (1, "green")),
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
        thresholds("red", (1, "green")),
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
        thresholds("red", (1, "green")),
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
    # The counter itself, not increase(): increase() extrapolates to its window (one deadlock
    # read as about 1.3) and that window follows the zoom. Each step up is one deadlock.
    d.timeseries(
        "PostgreSQL deadlocks",
        "Deadlocks detected since the statistics were last reset, per database: each step up "
        "is a deadlock; any step is worth a look.",
        "short",
        [Query(f"sum by (datname) (pg_stat_database_deadlocks{{{PG}}})", "{{datname}}")],
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
