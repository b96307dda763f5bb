"""make bench's verdicts and its report: the targets, the markdown tables, the files written."""

# ruff: noqa: RUF001, RUF003 - the report speaks in × and en dashes
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bench.config import LABELS, RATIO_PAIRS, RESULTS_DIR, STACK_PATHS
from bench.measure import Row
from bench.tls_rows import tls_markdown

Rows = Mapping[str, Row]
Extra = Mapping[str, Any]
# (what was measured, when one target covers several; the value) for each subject of a target.
Measured = Iterator[tuple[str, float]]


def _ratio(name: str) -> Callable[[Rows, Extra], Measured]:
    def measured(rows: Rows, extra: Extra) -> Measured:
        if name in rows:
            yield "", rows[name].ratio

    return measured


def _metrics_overhead(rows: Rows, extra: Extra) -> Measured:
    if runs := extra.get("metrics"):
        pairs = [
            (us, on)
            for run in runs
            for us, on in zip(run["cpu_us"], run["metrics_on"], strict=True)
        ]
        on = [us for us, enabled in pairs if enabled]
        off = [us for us, enabled in pairs if not enabled]
        yield "", ((sum(on) / len(on)) / (sum(off) / len(off)) - 1) * 100


def _p99(subject: str, run: Mapping[str, Any]) -> tuple[str, float]:
    p99: float = run["latency_ms"]["p99"]
    # A generator that fell behind its schedule measured a lower rate than asked for.
    sustained = run["achieved_rate"] >= 0.9 * run["target_rate"]
    if not sustained or math.isnan(p99):
        return f"{subject} (rate not sustained)", math.inf
    return subject, p99


def _fixed_p99(rows: Rows, extra: Extra) -> Measured:
    for name in STACK_PATHS:
        row = rows.get(name)
        if row is not None and row.fixed is not None:
            yield _p99(row.label, row.fixed)


def _shared_p99(rows: Rows, extra: Extra) -> Measured:
    for name, shared in extra.get("shared_saturation", {}).items():
        yield _p99(LABELS[name], shared["run"])


def _rss(rows: Rows, extra: Extra) -> Measured:
    yield from extra.get("rss_mb", {}).items()


@dataclass(frozen=True)
class Target:
    name: str  # "{}" stands for the subject where one target covers several rows or replicas
    limit: float
    unit: str
    measured: Callable[[Rows, Extra], Measured]


# Every limit the run is judged by, in the order the report lists them. Re-based on redis-py and
# prometheus-fastapi-instrumentator (issue 12): a redis-py command costs the client about 10×
# the CPU of the hand-written client's, and the instrumentator adds 35-55 µs to a hello.
TARGETS = (
    Target("cached GET CPU/request ÷ hello", 3.0, "×", _ratio("cached")),
    Target("metrics overhead on cached GET (CPU/request)", 15.0, "%", _metrics_overhead),
    Target("uncached GET CPU/request ÷ hello", 7.0, "×", _ratio("uncached")),
    Target("p99 at 70% of saturation, {}", 25.0, "ms", _fixed_p99),
    Target("p99 at 70% of the capacity beside Locust, {}", 25.0, "ms", _shared_p99),
    Target("RSS of {} after the run", 110.0, "MB", _rss),
)


def verdict(target: Target, subject: str, value: float) -> dict[str, Any]:
    """Met when the value is within the limit; None (no verdict) when nothing was measured."""
    met = bool(value <= target.limit) if not math.isnan(value) else None
    return {"target": target.name.format(subject), "limit": target.limit, "value": value,
            "unit": target.unit, "met": met}  # fmt: skip


def targets(rows: Rows, extra: Extra) -> list[dict[str, Any]]:
    return [
        verdict(target, subject, value)
        for target in TARGETS
        for subject, value in target.measured(rows, extra)
    ]


# --- markdown ----------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _table(header: str, align: str, intro: str = "") -> list[str]:
    """A blank line, the table's introduction if any, and its header."""
    return ["", *([intro, ""] if intro else []), header, align]


def _intro(report: Mapping[str, Any]) -> list[str]:
    m, o = report["machine"], report["options"]
    samples = report["extra"].get("hello_us_samples") or [math.nan]
    return [
        f"`make bench` on {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Linux "
        f"{m['kernel']}, Python {m['python']}, {report['finished']}; load average before "
        f"{report['load_before']}, after {report['load_after']}.",
        "",
        f"wrk -t1 -c{o['connections']}, {o['duration']} s per row after a {o['warmup']} s warm-up. "
        f"Stack rows go through nginx to {o['replicas']} API replicas. Fixed rate: Locust at "
        f"{o['fixed_fraction']:.0%} of the row's wrk throughput for {o['fixed_seconds']} s, "
        "latency timed from each request's scheduled send (no coordinated omission). CPU µs/req: "
        "CPU time of all API replica processes (ceilings: the one server process) ÷ requests; "
        "× hello: that ÷ the CPU per request of a FastAPI hello measured just before the row "
        f"(it ranged {min(samples):.0f}–{max(samples):.0f} µs over the run); rows with a CPU "
        f"target: the median of {RATIO_PAIRS} such pairs of runs, their range in brackets.",
    ]


def _ratio_cell(row: Row) -> str:
    if row.name == "nginx":
        return "—"
    if not row.more_ratios:
        return _fmt(row.ratio, 2)
    return f"{row.ratio:.2f} ({min(row.ratios):.2f}–{max(row.ratios):.2f})"


def _rows_table(rows: list[Row]) -> list[str]:
    lines = _table(
        "| Path | req/s | p50 ms | p99 ms | API CPU µs/req | × hello | nginx µs/req "
        "| fixed rate req/s | p50 ms | p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    )
    for row in rows:
        api = row.cpu_us() if row.name != "nginx" else math.nan
        nginx = row.cpu_us("nginx") if row.name != "nginx" else row.cpu_us()
        fixed = row.fixed or {}
        latency = fixed.get("latency_ms", {})
        lines.append(
            f"| {row.label} | {_fmt(row.wrk.rps)} | {_fmt(row.wrk.p50_ms, 2)} | "
            f"{_fmt(row.wrk.p99_ms, 2)} | {_fmt(api, 1)} | {_ratio_cell(row)} | "
            f"{_fmt(nginx, 1)} | {_fmt(fixed.get('achieved_rate', math.nan))} | "
            f"{_fmt(latency.get('p50', math.nan), 2)} | {_fmt(latency.get('p99', math.nan), 2)} |"
        )
    return lines


def _generator_cell(fixed: Mapping[str, Any] | None) -> str:
    if not fixed:
        return "—"
    return (
        f"{fixed['generator_cpu_share']:.0%} of a core, {fixed['late_starts']} late sends; "
        f"machine {fixed['machine_busy_share']:.0%} busy, API "
        f"{fixed['cpu_us_per_request'].get('api', math.nan):.0f} µs/req"
    )


def _others_table(rows: list[Row]) -> list[str]:
    stack_rows = [row for row in rows if row.primary == "api"]
    if not stack_rows:
        return []
    lines = _table(
        "| Path | PostgreSQL | Redis | supervisord | cache hits / misses | errors "
        "| load (1 min) | during the fixed-rate run |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
        "Other processes of the stack rows, CPU µs per request (supervisord copies every log "
        "line of nginx and the replicas to its files):",
    )
    for row in stack_rows:
        cache = row.cache or {}
        hits = f"{cache.get('hit', 0):,.0f} / {cache.get('miss', 0):,.0f}" if cache else "—"
        others = " | ".join(
            _fmt(row.cpu_us(group), 1) for group in ("postgres", "redis", "supervisord")
        )
        lines.append(
            f"| {row.label} | {others} | {hits} | {row.wrk.errors} | {row.load} "
            f"| {_generator_cell(row.fixed)} |"
        )
    return lines


def _metrics_table(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    lines = _table(
        "| Run | Replica | METRICS_ENABLED | Requests served | API CPU µs/req |",
        "|---|---|---|--:|--:|",
        "Instrumentation: the cached GET with METRICS_ENABLED=false on one replica and true "
        "on the other, at the same time, each driven by its own wrk, then swapped:",
    )
    for number, run in enumerate(runs, start=1):
        for index, (us, served) in enumerate(zip(run["cpu_us"], run["served"], strict=True)):
            enabled = "true" if run["metrics_on"][index] else "false"
            lines.append(f"| {number} | api-{index + 1} | {enabled} | {served:,.0f} | {us:.1f} |")
    return lines


def _shared_table(shared: Mapping[str, Any]) -> list[str]:
    if not shared:
        return []
    lines = _table(
        "| Path | capacity beside Locust req/s | fixed rate req/s | p50 ms | p99 ms "
        "| machine busy | Locust CPU | API µs/req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
        "Fixed rate against the capacity left beside the generator: Locust asked for 1.5× the "
        "wrk rate sustains the capacity below (its own CPU is taken from the same cores), "
        "then runs at 70% of that:",
    )
    for name, found in shared.items():
        run = found["run"]
        lines.append(
            f"| {LABELS[name]} | {_fmt(found['capacity'])} | {_fmt(run['achieved_rate'])} | "
            f"{_fmt(run['latency_ms']['p50'], 2)} | {_fmt(run['latency_ms']['p99'], 2)} | "
            f"{run['machine_busy_share']:.0%} | {run['generator_cpu_share']:.0%} of a core | "
            f"{_fmt(run['cpu_us_per_request'].get('api', math.nan), 0)} |"
        )
    return lines


def _rss_line(rss_mb: Mapping[str, float]) -> list[str]:
    if not rss_mb:
        return []
    rss = ", ".join(f"{k} {v} MB" for k, v in rss_mb.items())
    return ["", f"RSS per API replica after the run: {rss}."]


def _targets_table(found: list[dict[str, Any]]) -> list[str]:
    if not found:
        return []
    lines = _table("| Target | Limit | Measured | Met |", "|---|--:|--:|:-:|")
    for t in found:
        met = {True: "yes", False: "**no**", None: "—"}[t["met"]]
        limit, value = f"{t['limit']:g} {t['unit']}", f"{t['value']:.2f} {t['unit']}"
        lines.append(f"| {t['target']} | ≤ {limit} | {value} | {met} |")
    return lines


def _profiles(profiles: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, summary in profiles.items():
        lines += ["", f"py-spy, replica 1, {LABELS[name]} (share of samples):", ""]
        lines += [f"    {line}" for line in summary.get("text", "").splitlines()]
    return lines


def markdown(report: Mapping[str, Any], rows: list[Row]) -> str:
    extra = report["extra"]
    lines = [
        *_intro(report),
        *_rows_table(rows),
        *_others_table(rows),
        *_metrics_table(extra.get("metrics") or []),
        *_shared_table(extra.get("shared_saturation") or {}),
        *tls_markdown(extra.get("tls") or {}),
        *_rss_line(extra.get("rss_mb") or {}),
        *_targets_table(report["targets"]),
        *_profiles(extra.get("profiles", {})),
    ]
    return "\n".join(lines) + "\n"


# --- files -------------------------------------------------------------------------------------


def row_records(rows: list[Row]) -> list[dict[str, Any]]:
    """The rows as the JSON report holds them, with their derived numbers."""
    return [
        {
            **asdict(row),
            "cpu_us_per_request": {group: row.cpu_us(group) for group in row.cpu_seconds},
            "cpu_ratio_to_hello": row.ratio,
        }
        for row in rows
    ]


def write_results(report: Mapping[str, Any], text: str) -> str:
    """bench/results/bench-<stamp>.json and .md, copied to latest.*; returns the stamp."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for suffix, content in (
        ("json", json.dumps(report, indent=2, default=str)),
        ("md", text),
    ):
        (RESULTS_DIR / f"bench-{stamp}.{suffix}").write_text(content)
        (RESULTS_DIR / f"latest.{suffix}").write_text(content)
    return stamp
