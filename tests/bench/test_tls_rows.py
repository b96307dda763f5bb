"""The TLS pairs' arithmetic and table, from measurements made up here (the runs take minutes)."""
# ruff: noqa: RUF003 - the report speaks in µs and ×

import pytest

from bench.config import BenchError
from bench.tls_rows import MODES, parse_s_time, summarize, tls_markdown

S_TIME = """Collecting connection statistics for 10 seconds
*****************************************************

1136 connections in 1.48s; 767.57 connections/user sec, bytes read 0
1136 connections in 11 real seconds, 0 bytes read per connection
"""


def _run(rps: float, nginx_us: float, errors: int = 0) -> dict[str, float]:
    return {"rps": rps, "p50_ms": 1000 / rps, "p99_ms": 5000 / rps, "nginx_us": nginx_us,
            "api_us": 300.0, "errors": errors, "requests": rps * 10}  # fmt: skip


def test_s_time_output_is_parsed() -> None:
    assert parse_s_time(S_TIME) == (1136, 1.48)
    with pytest.raises(BenchError, match="unexpected openssl s_time output"):
        parse_s_time("connect: Connection refused\n")


def test_what_tls_adds_is_the_median_of_the_rounds_differences() -> None:
    # The machine slowed down in round 2: both schemes cost more there, the difference less so.
    runs = {
        "http": [_run(1000, 40.0), _run(1100, 90.0, errors=1), _run(1000, 42.0)],
        "https": [_run(900, 60.0), _run(1000, 120.0), _run(900, 58.0)],
    }
    summary = summarize(runs)
    assert summary["http_nginx_us"] == 42.0
    assert summary["https_nginx_us"] == 60.0
    # Differences 20, 30, 16: their median, not 60 - 42 = 18.
    assert summary["added_nginx_us"] == 20.0
    assert summary["added_nginx_us_range"] == [16.0, 30.0]
    assert summary["added_rps"] == -100.0
    assert summary["added_api_us"] == 0.0
    assert summary["errors"] == 1


def test_the_table_has_every_mode_and_the_handshake() -> None:
    runs = {"http": [_run(1000, 40.0)], "https": [_run(900, 60.0)]}
    found = {mode: {"runs": runs, **summarize(runs)} for mode in MODES}
    found["handshake"] = {"connections": 1000, "per_second": 100.0, "nginx_us": 812.4}
    text = "\n".join(tls_markdown(found))
    for _, _, what in MODES.values():
        assert f"| {what} | HTTPS | 900 |" in text
    assert "| | TLS adds | -100 | +0.11 | +0.56 | **+20.0** (+20 to +20) | +0.0 |" in text
    assert "nginx 812 µs of CPU each (100 handshakes/s)" in text
    assert tls_markdown({}) == []
