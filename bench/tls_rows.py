"""What TLS costs: the cached GET through the same nginx over plain HTTP and over HTTPS, side by
side in one run, so the difference is TLS and nothing else.

Three ways a client uses a connection, each measured plain then encrypted, ROUNDS times in
alternating order. What TLS adds is the median of each round's difference (HTTPS minus the HTTP
run next to it): on a shared machine the CPU per request of the same run moves by tens of
percent from one minute to the next, and a difference of neighbours cancels most of that.

- keep-alive: wrk on 64 kept-alive connections, the way a load balancer or an HTTP client pool
  talks: what TLS adds per request once connected (record encryption, nginx's SSL_read/write).
- one connection: the same on a single connection, far from saturation: the latency TLS adds
  to one request when nothing queues.
- a connection per request: wrk with `Connection: close`, so a TCP and a TLS handshake per
  request. wrk resumes its TLS session (TLS 1.3 with nginx's session cache; nginx issues no
  session tickets), so this is an abbreviated handshake: a client that comes back.

And the full handshake on its own: `openssl s_time -new` opens connections with a new session
each (TLS 1.3, X25519, the ECDSA P-256 certificate) and sends nothing; nginx's CPU per
connection is what a first-time client costs.

wrk speaks HTTP/1.1, so these are HTTP/1.1 over TLS; browsers would use HTTP/2 on the same
connection setup. CPU per request is nginx's own (/proc), and the API's beside it, which TLS
ending at nginx must leave unchanged.
"""

# ruff: noqa: S603, S607, RUF003 - openssl, a local binary from PATH; µs and × in the report
from __future__ import annotations

import math
import re
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from bench.config import BenchError, Deadline, Options
from bench.native_stack import BenchStack
from bench.procs import CpuMeter, Group, per_request_us
from bench.wrk import wrk

# name → (connections, extra wrk headers, what it is)
MODES: dict[str, tuple[int | None, tuple[str, ...], str]] = {
    "keepalive": (None, (), "keep-alive, 64 connections (saturation)"),
    "single": (1, (), "keep-alive, 1 connection (no queueing)"),
    "close": (None, ("Connection: close",), "a connection per request (resumed TLS session)"),
}
SCHEMES = ("http", "https")
ROUNDS = 3
# The report's columns: the summary key and its decimals.
COLUMNS = (("rps", 0), ("p50_ms", 2), ("p99_ms", 2), ("nginx_us", 1), ("api_us", 1))


def parse_s_time(output: str) -> tuple[int, float]:
    """(connections, CPU seconds of openssl itself) from `openssl s_time` output."""
    found = re.search(r"(\d+) connections in ([\d.]+)s;", output)
    if found is None:
        raise BenchError(f"unexpected openssl s_time output:\n{output[-500:]}")
    return int(found[1]), float(found[2])


def full_handshakes(port: int, seconds: int, nginx: Group) -> dict[str, float]:
    """nginx's CPU per full TLS handshake, from `openssl s_time -new` for `seconds`."""
    meter = CpuMeter([nginx])
    meter.start()
    result = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 30, check=False,
    )  # fmt: skip
    used = meter.stop()
    if result.returncode != 0:
        raise BenchError(f"openssl s_time failed: {result.stdout[-300:]}{result.stderr[-300:]}")
    connections, _ = parse_s_time(result.stdout)
    return {
        "connections": connections,
        "per_second": connections / seconds,
        "nginx_us": per_request_us(used[nginx.name], connections),
    }


def _run(stack: BenchStack, scheme: str, mode: str, path: str, options: Options) -> dict[str, Any]:
    connections, headers, _ = MODES[mode]
    conns = connections or options.connections
    url = (stack.https if scheme == "https" else stack.nginx) + path
    wrk(url, options.warmup, conns, headers=headers)
    groups = stack.groups()
    meter = CpuMeter(groups)
    meter.start()
    result = wrk(url, options.duration, conns, headers=headers)
    used = meter.stop()
    run = {
        "rps": result.rps,
        "requests": result.requests,
        "errors": result.errors,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "nginx_us": per_request_us(used["nginx"], result.requests),
        "api_us": per_request_us(used["api"], result.requests),
    }
    print(
        f"  tls {mode:<9} {scheme:<5} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  nginx {run['nginx_us']:6.1f} µs/req  "
        f"api {run['api_us']:6.1f} µs/req",
        flush=True,
    )
    return run


def summarize(runs: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, Any]:
    """Medians per scheme, and what HTTPS adds: the median of the rounds' differences (each
    HTTPS run minus the HTTP run of its round), with their range for nginx's CPU."""
    keys = [key for key, _ in COLUMNS]
    summary: dict[str, Any] = {
        f"{scheme}_{key}": statistics.median(run[key] for run in runs[scheme])
        for scheme in SCHEMES
        for key in keys
    }
    pairs = list(zip(runs["http"], runs["https"], strict=True))
    for key in keys:
        summary[f"added_{key}"] = statistics.median(tls[key] - plain[key] for plain, tls in pairs)
    added_nginx = [tls["nginx_us"] - plain["nginx_us"] for plain, tls in pairs]
    summary["added_nginx_us_range"] = [min(added_nginx), max(added_nginx)]
    summary["errors"] = sum(run["errors"] for scheme in SCHEMES for run in runs[scheme])
    return summary


def tls_pairs(stack: BenchStack, path: str, options: Options, deadline: Deadline) -> dict[str, Any]:
    """Every mode plain and encrypted, ROUNDS times in alternating order, then full handshakes."""
    found: dict[str, Any] = {}
    for mode in MODES:
        deadline.check(ROUNDS * 2 * (options.duration + options.warmup) + 30, f"tls {mode}")
        runs: dict[str, list[dict[str, Any]]] = {scheme: [] for scheme in SCHEMES}
        for round_ in range(ROUNDS):
            for scheme in SCHEMES if round_ % 2 == 0 else SCHEMES[::-1]:
                runs[scheme].append(_run(stack, scheme, mode, path, options))
        found[mode] = {"runs": runs, **summarize(runs)}
    deadline.check(options.duration + 30, "tls handshakes")
    nginx = next(group for group in stack.groups() if group.name == "nginx")
    found["handshake"] = full_handshakes(stack.topology.ports["nginx-tls"], options.duration, nginx)
    print(
        f"  tls full handshakes {found['handshake']['per_second']:,.0f}/s (one openssl client), "
        f"nginx {found['handshake']['nginx_us']:.0f} µs each",
        flush=True,
    )
    return found


def _cell(value: float, digits: int = 1, sign: bool = False) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:+,.{digits}f}" if sign else f"{value:,.{digits}f}"


def tls_markdown(found: Mapping[str, Any]) -> list[str]:
    """The report's table: each mode's medians plain and encrypted, and what TLS adds."""
    if not found:
        return []
    lines = [
        "",
        "TLS at nginx: the cached GET over plain HTTP and HTTPS (HTTP/1.1, TLS 1.3), side by "
        f"side, medians of {ROUNDS} runs each; what TLS adds is the median of the {ROUNDS} "
        "rounds' differences (their range for nginx):",
        "",
        "| Connection use | Scheme | req/s | p50 ms | p99 ms | nginx µs/req | API µs/req |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for mode, (_, _, what) in MODES.items():
        summary = found.get(mode)
        if summary is None:
            continue
        for scheme in SCHEMES:
            cells = [_cell(summary[f"{scheme}_{key}"], digits) for key, digits in COLUMNS]
            lines.append(f"| {what} | {scheme.upper()} | {' | '.join(cells)} |")
        added = [_cell(summary[f"added_{key}"], digits, sign=True) for key, digits in COLUMNS]
        low, high = summary["added_nginx_us_range"]
        # nginx's: the cost of TLS, with the range of the rounds.
        added[3] = f"**{added[3]}** ({_cell(low, 0, True)} to {_cell(high, 0, True)})"
        lines.append(f"| | TLS adds | {' | '.join(added)} |")
    if handshake := found.get("handshake"):
        lines += [
            "",
            f"A full TLS 1.3 handshake (openssl s_time -new, one client, no request): nginx "
            f"{_cell(handshake['nginx_us'], 0)} µs of CPU each "
            f"({_cell(handshake['per_second'], 0)} handshakes/s).",
        ]
    return lines
