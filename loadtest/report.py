"""summary.md, index.html and results.json of a run: client and server numbers side by side.

Both documents are rendered from the same tables; index.html embeds the PNG charts as data URIs,
so the one file can be mailed or attached to a ticket and still shows everything.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.model import Latency, Offered, ServerExtras, SideNumbers, Window
from loadtest.thresholds import Check

NONE = "n/a"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class RunReport:
    run_id: str
    folder: Path
    verdict: str
    window: Window
    offered: Offered
    client: SideNumbers
    server: SideNumbers
    extras: ServerExtras
    checks: list[Check]
    settings: dict[str, Any]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    failures: list[tuple[str, str, int]] = field(default_factory=list)
    exceptions: int = 0
    charts: list[Path] = field(default_factory=list)
    server_source: str = ""  # where the server's per-second numbers came from
    server_step: str = ""
    server_per_second: list[tuple[float, float]] = field(default_factory=list)  # (time, req/s)


ROUTE_HEADERS = [
    *("Route", "Client req", "fail", "p50", "p95", "p99"),
    *("Server req", "5xx", "p50", "p95", "p99"),
]
REPLICA_HEADERS = [
    *("Replica", "Instance", "Requests", "Share", "CPU (cores)", "Peak RSS"),
    *("Pool peak / size", "Pool mean", "Overflow peak"),
]


def ms(value: float | None) -> str:
    return NONE if value is None else f"{value:,.1f}"


def pct(value: float | None) -> str:
    return NONE if value is None else f"{value:.2%}"


def number(value: float | None, digits: int = 0) -> str:
    return NONE if value is None else f"{value:,.{digits}f}"


def mib(value: float | None) -> str:
    return NONE if value is None else f"{value / 2**20:,.0f} MiB"


def _latency_cells(latency: Latency | None) -> list[str]:
    latency = latency or Latency()
    return [ms(latency.p50), ms(latency.p95), ms(latency.p99)]


def overall_table(report: RunReport) -> Table:
    client, server = report.client, report.server
    rows = [
        ["Requests", number(client.requests), number(server.requests)],
        ["Throughput (req/s)", number(client.throughput_rps, 1), number(server.throughput_rps, 1)],
        [
            "Throughput after ramp-up (req/s)",
            number(client.steady_rps, 1),
            number(server.steady_rps, 1),
        ],
        ["Failures", number(client.failures), number(server.failures)],
        ["Error ratio", pct(client.error_ratio), pct(server.error_ratio)],
    ]
    for name in client.groups:
        for label, c, s in zip(
            ("p50", "p95", "p99"),
            _latency_cells(client.groups.get(name)),
            _latency_cells(server.groups.get(name)),
            strict=True,
        ):
            rows.append([f"{name} {label} (ms)", c, s])
    return Table(
        "Client and server",
        ["", "Client (Locust)", "Server (API metrics)"],
        rows,
        "Client failures are answers the scenario did not expect (its deliberate 4xx are "
        "expected); server failures are 5xx. The client's time includes nginx and the network. "
        f"Offered: {report.offered.describe()}; the throughput check compares each side's rate "
        f"after ramp-up with it. Server per-second numbers: {report.server_source}.",
    )


def routes_table(report: RunReport) -> Table:
    keys = sorted({*report.client.routes, *report.server.routes}, key=lambda k: (k.split()[1], k))
    rows = []
    for key in keys:
        c, s = report.client.routes.get(key), report.server.routes.get(key)
        rows.append(
            [
                key,
                number(c.requests if c else None),
                number(c.failures if c else None),
                *_latency_cells(c.latency if c else None),
                number(s.requests if s else None),
                number(s.failures if s else None),
                *_latency_cells(s.latency if s else None),
            ]
        )
    return Table(
        "Per route (ms)",
        ROUTE_HEADERS,
        rows,
        "Server percentiles are interpolated inside the API's histogram buckets (1 ms to 5 s).",
    )


def replicas_table(report: RunReport) -> Table:
    rows = [
        [
            r.name,
            r.instance,
            number(r.requests),
            pct(r.share),
            number(r.cpu_cores, 2),
            mib(r.memory_peak_bytes),
            f"{number(r.pool_checked_out_peak)} / {number(r.pool_size)}",
            number(r.pool_checked_out_mean, 2),
            number(r.pool_overflow_peak),
        ]
        for r in report.extras.replicas
    ]
    return Table(
        "Replicas (server)",
        REPLICA_HEADERS,
        rows,
        "Pool and memory are sampled at each scrape, so a peak between two scrapes is not seen.",
    )


def server_table(report: RunReport) -> Table:
    extras = report.extras
    statuses = ", ".join(f"{code}: {count:,}" for code, count in extras.statuses.items())
    cpus = f" of {extras.host_cpus} CPUs" if extras.host_cpus else ""
    return Table(
        "Server",
        ["", "Value"],
        [
            ["Cache hit ratio (GET /items/{item_id})", pct(extras.cache_hit_ratio)],
            ["Cache lookups", number(extras.cache_lookups)],
            ["Responses by status", statuses or NONE],
            ["Requests nginx handled", number(extras.nginx_requests)],
            ["Requests in the 1-s reads of the replicas", number(extras.sampled_requests)],
            ["Host CPU busy" + cpus, pct(extras.host_cpu_busy)],
        ],
        "The host runs the whole stack and Locust: a busy host slows both sides.",
    )


def checks_table(report: RunReport) -> Table:
    rows = [
        [
            "pass" if c.passed else "FAIL",
            c.side,
            c.name,
            c.format_value(c.limit),
            "no data" if c.actual is None else c.format_value(c.actual),
        ]
        for c in report.checks
    ]
    return Table("SLO checks", ["Result", "Side", "Check", "Limit", "Measured"], rows)


def context_table(report: RunReport) -> Table:
    rows = [[key, str(value)] for key, value in {**report.machine, **report.settings}.items()]
    rows.append(["Window (UTC)", _window_text(report.window)])
    return Table("Run", ["", "Value"], rows)


def failures_table(report: RunReport) -> Table:
    rows = [[request, error, number(count)] for request, error, count in report.failures]
    return Table("Most frequent failures (client)", ["Request", "Error", "Count"], rows)


def _window_text(window: Window) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415 - only here

    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")

    return f"{stamp(window.start)} → {stamp(window.end)} ({window.seconds:.1f} s)"


def tables(report: RunReport) -> list[Table]:
    result = [
        checks_table(report),
        overall_table(report),
        routes_table(report),
        replicas_table(report),
        server_table(report),
    ]
    if report.failures:
        result.append(failures_table(report))
    result.append(context_table(report))
    return result


def _md(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [f"## {table.title}", "", line(table.headers), line(["---"] * len(table.headers))]
    lines += [line(row) for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def breaches(report: RunReport) -> list[str]:
    return [c.describe() for c in report.checks if not c.passed]


def markdown(report: RunReport) -> str:
    head = [
        f"# Load test {report.run_id}: {report.verdict}",
        "",
        f"{report.client.requests:,} requests in {report.window.seconds:.0f} s against "
        f"{report.settings.get('host')}; window {_window_text(report.window)}.",
    ]
    if breaches(report):
        head += ["", "Breaches:", "", *(f"- {line}" for line in breaches(report))]
    if report.notes:
        head += ["", "Before the run:", "", *(f"- {note}" for note in report.notes)]
    charts = [f"![{p.stem}]({p.name})" for p in report.charts]
    files = "Locust's own report: [locust.html](locust.html), CSVs `locust_*.csv`, `locust.json`."
    return "\n\n".join(["\n".join(head), *map(_md, tables(report)), "\n".join(charts), files])


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f4f4f4}td{text-align:right}td:first-child{text-align:left}
.PASS{color:#1a7f37}.FAIL{color:#cf222e}.note{color:#666;font-size:12px}img{max-width:100%}
"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{html.escape(cell)}">{html.escape(cell)}</td>'
            if cell in {"pass", "FAIL"}
            else f"<td>{html.escape(cell)}</td>"
            for cell in row
        )
        + "</tr>"
        for row in table.rows
    )
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return f"<h2>{html.escape(table.title)}</h2><table><tr>{head}</tr>{body}</table>{note}"


def page(report: RunReport) -> str:
    images = "".join(
        f'<p><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></p>'
        for p in report.charts
    )
    items = "".join(f"<li>{html.escape(line)}</li>" for line in breaches(report))
    listed = f"<ul>{items}</ul>" if items else ""
    title = f"Load test {report.run_id}: {report.verdict}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>"
        f'<h1>Load test {html.escape(report.run_id)}: <span class="{report.verdict}">'
        f"{report.verdict}</span></h1>{listed}"
        f"<p>Window {html.escape(_window_text(report.window))}. Locust's own report: "
        f'<a href="locust.html">locust.html</a>.</p>'
        + "".join(_html_table(t) for t in tables(report)[:3])
        + f"<h2>Over the window</h2>{images}"
        + "".join(_html_table(t) for t in tables(report)[3:])
        + "</body></html>\n"
    )


def results(report: RunReport) -> dict[str, Any]:
    def side(numbers: SideNumbers) -> dict[str, Any]:
        return {
            **asdict(numbers),
            "throughput_rps": numbers.throughput_rps,
            "error_ratio": numbers.error_ratio,
        }

    return {
        "run_id": report.run_id,
        "verdict": report.verdict,
        "window": asdict(report.window),
        "offered": asdict(report.offered),
        "client": side(report.client),
        "server": side(report.server),
        "server_extras": asdict(report.extras),
        "server_per_second": {
            "source": report.server_source,
            "step": report.server_step,
            "requests": report.server_per_second,
        },
        "checks": [{**asdict(c), "passed": c.passed, "text": c.describe()} for c in report.checks],
        "exceptions": report.exceptions,
        "failures": report.failures,
        "settings": report.settings,
        "machine": report.machine,
        "notes": report.notes,
    }


def write(report: RunReport) -> list[Path]:
    folder = report.folder
    (folder / "summary.md").write_text(markdown(report) + "\n", encoding="utf-8")
    (folder / "index.html").write_text(page(report), encoding="utf-8")
    (folder / "results.json").write_text(
        json.dumps(results(report), indent=2, default=str) + "\n", encoding="utf-8"
    )
    return [folder / "summary.md", folder / "index.html", folder / "results.json"]
