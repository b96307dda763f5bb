"""make bench's verdicts and tables, from measurements made up here (the runs take minutes)."""
# ruff: noqa: RUF001, RUF003 - the report speaks in × and en dashes

import math
from typing import Any

from bench.measure import Row
from bench.profile import profile_summary
from bench.report import markdown, targets
from bench.wrk import WrkResult, parse_wrk

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8080/items/1
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.21ms    5.10ms  80.00ms   90.00%
  Latency Distribution
     50%   13.35ms
     75%   15.00ms
     90%   18.00ms
     99%   33.36ms
  46390 requests in 10.00s, 20.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   4639.00
Transfer/sec:      2.00MB
"""


def _row(name: str, label: str, requests: int, api_seconds: float, hello_us: float) -> Row:
    result = WrkResult(requests, 10.0, requests / 10, 1.0, 2.0, 3.0, 0)
    return Row(name, label, "api", result, {"api": api_seconds}, hello_us=hello_us)


def _fixed(rate: float, achieved: float, p99: float) -> dict[str, Any]:
    return {
        "target_rate": rate,
        "achieved_rate": achieved,
        "latency_ms": {"p50": 1.0, "p99": p99},
        "machine_busy_share": 0.8,
        "generator_cpu_share": 0.3,
        "late_starts": 0,
        "cpu_us_per_request": {"api": 400.0},
    }


def test_wrk_output_is_parsed_with_its_errors() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert (result.requests, result.rps, result.p99_ms, result.errors) == (46390, 4639.0, 33.36, 3)


def test_targets_compare_ratios_and_latencies_with_their_limits() -> None:
    # 10,000 requests: 3.72 s of CPU is 372 µs each, 3.1× a 120 µs hello; 4.6 s is 460 µs, 3.8×.
    cached = _row("cached", "GET /items/{id}, cached", 10_000, 3.72, 120.0)
    uncached = _row("uncached", "GET /items/{id}, uncached", 10_000, 4.6, 120.0)
    cached.fixed = _fixed(3000, 2000, 400.0)  # fell behind: not a measurement of p99
    uncached.fixed = _fixed(1000, 990, 20.0)
    extra = {
        "metrics": [{"cpu_us": [110.0, 100.0], "metrics_on": [True, False]}],
        "shared_saturation": {"cached": {"capacity": 3500, "run": _fixed(2450, 2440, 8.0)}},
        "rss_mb": {"api-1": 111.5},
    }
    found = {t["target"]: t for t in targets({"cached": cached, "uncached": uncached}, extra)}
    assert found["cached GET CPU/request ÷ hello"]["met"] is False
    assert math.isclose(found["cached GET CPU/request ÷ hello"]["value"], 3.1)
    assert found["uncached GET CPU/request ÷ hello"]["met"] is True
    assert math.isclose(found["metrics overhead on cached GET (CPU/request)"]["value"], 10.0)
    assert (
        found["p99 at 70% of saturation, GET /items/{id}, cached (rate not sustained)"]["met"]
        is False
    )
    assert found["p99 at 70% of saturation, GET /items/{id}, uncached"]["met"] is True
    assert found["p99 at 70% of the capacity beside Locust, GET /items/{id}, cached"]["met"]
    assert found["RSS of api-1 after the run"]["met"] is False


def test_the_median_of_the_ratio_pairs_is_the_verdict() -> None:
    cached = _row("cached", "GET /items/{id}, cached", 10_000, 3.0, 120.0)  # 2.5×
    cached.more_ratios = [2.0, 1.9]
    (verdict,) = targets({"cached": cached}, {})
    assert (verdict["value"], verdict["met"]) == (2.0, True)
    text = markdown(_report(targets({"cached": cached}, {}), {}), [cached])
    assert "| 300.0 | 2.00 (1.90–2.50) |" in text


def test_a_row_that_served_nothing_gets_no_verdict() -> None:
    # No request served: no CPU per request, so neither met nor missed.
    cached = _row("cached", "GET /items/{id}, cached", 0, 3.0, 120.0)
    (verdict,) = targets({"cached": cached}, {})
    assert math.isnan(verdict["value"])
    assert verdict["met"] is None
    text = markdown(_report([verdict], {}), [cached])
    assert "| cached GET CPU/request ÷ hello | ≤ 3 × | nan × | — |" in text


def _report(found: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": {"cpus": 2, "cpu_model": "x", "memory_gb": 1, "kernel": "k", "python": "3"},
        "options": {"connections": 64, "duration": 10, "warmup": 2, "replicas": 2,
                    "fixed_fraction": 0.7, "fixed_seconds": 15},
        "finished": "now", "load_before": "0", "load_after": "0", "extra": extra,
        "targets": found,
    }  # fmt: skip


def test_markdown_carries_every_row_and_verdict() -> None:
    cached = _row("cached", "GET /items/{id}, cached", 10_000, 3.0, 120.0)
    cached.fixed = _fixed(3000, 2990, 30.0)
    extra: dict[str, Any] = {
        "shared_saturation": {"cached": {"capacity": 3500, "run": _fixed(2450, 2440, 8.0)}},
        "hello_us_samples": [118.0, 125.0],
    }
    report = _report(targets({"cached": cached}, extra), extra)
    text = markdown(report, [cached])
    assert "| GET /items/{id}, cached | 1,000 |" in text
    assert "| GET /items/{id}, cached | 3,500 | 2,440 |" in text  # the capacity table
    assert "| cached GET CPU/request ÷ hello | ≤ 3 × | 2.50 × | yes |" in text
    assert "ranged 118–125 µs" in text


def test_profile_summary_attributes_time_to_packages_and_calls() -> None:
    raw = (
        "main (/x/app/__main__.py:1);get_item (/x/services/api/app/routes/items.py:9) 3\n"
        "main (/x/app/__main__.py:1);send (/v/site-packages/uvicorn/protocols/http/h.py:5) 1\n"
    )
    summary = profile_summary(raw)
    assert summary["samples"] == 4
    assert summary["self_by_package"] == {"app": 0.75, "uvicorn": 0.25}
    assert summary["inclusive"]["get_item (app/routes/items.py)"] == 0.75
