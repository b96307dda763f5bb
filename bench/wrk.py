"""wrk at fixed concurrency: the run, its output parsed, and the Lua scripts of the rows that need
one (a fresh id per request, a POST with a body)."""

# ruff: noqa: S603 - wrk, a local binary, with arguments built here
from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.config import BenchError


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if done is None or rps is None:
        raise BenchError(f"unexpected wrk output:\n{output}")
    seconds = float(done[2]) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done[3]]
    percentiles = {
        int(m[1]): float(m[2]) * _UNITS[m[3]]
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    }
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx[1]) if non_2xx else 0
    return WrkResult(
        requests=int(done[1]),
        seconds=seconds,
        rps=float(rps[1]),
        p50_ms=percentiles.get(50, math.nan),
        p90_ms=percentiles.get(90, math.nan),
        p99_ms=percentiles.get(99, math.nan),
        errors=errors,
    )


def wrk(
    url: str,
    seconds: int,
    connections: int,
    script: Path | None = None,
    headers: Sequence[str] = (),
) -> WrkResult:
    """headers: "Name: value" lines sent with every request. An https:// URL is not checked
    against any CA (wrk checks no certificate): only loopback stacks are measured."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script is not None:
        argv += ["-s", str(script)]
    for header in headers:
        argv += ["-H", header]
    result = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"wrk failed: {result.stdout}{result.stderr}")
    return parse_wrk(result.stdout)


def wrk_script(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.lua"
    path.write_text(body)
    return path


def fresh_ids_script(folder: Path, first: int, last: int) -> Path:
    # -t1: one Lua state, so one counter walks the ids in order and every request is a miss.
    return wrk_script(
        folder,
        "fresh_ids",
        f"""local id = {first - 1}
request = function()
  id = id + 1
  if id > {last} then id = {first} end
  return wrk.format("GET", "/items/" .. id)
end
""",
    )


def post_script(folder: Path, token: str, body: str) -> Path:
    return wrk_script(
        folder,
        "create",
        f"""wrk.method = "POST"
wrk.body = {json.dumps(body)}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
""",
    )
