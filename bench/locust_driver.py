"""A row's request, and Locust run at a fixed rate on it (the locustfile is bench/fixed_rate.py)."""

# ruff: noqa: S603 - the interpreter running this, with arguments built here
from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BENCH_DIR, PYTHON, BenchError
from bench.procs import CpuMeter, Group, per_request_us


@dataclass(frozen=True)
class Request:
    """One path of a row, described for both wrk and the fixed-rate Locust run."""

    path: str
    method: str = "GET"
    body: str = ""
    token: str = ""
    fresh_ids: tuple[int, int] | None = None  # (first, last): append a new id per request
    script: Path | None = None

    @property
    def wrk_path(self) -> str:
        # A script that builds its own request line (fresh ids) needs only the origin.
        return "/" if self.fresh_ids is not None else self.path


def fixed_rate(
    base_url: str,
    request: Request,
    rate: float,
    seconds: int,
    out: Path,
    groups: list[Group] | None = None,
) -> dict[str, Any]:
    """Locust at `rate`; with `groups`, also their CPU per request sent meanwhile."""
    # Each user sends every users/rate seconds; 50 ms between a user's requests keeps one slow
    # answer from delaying that user's next scheduled send in the usual case.
    users = max(10, math.ceil(rate * 0.05))
    env = {
        **os.environ,
        "BENCH_RATE": f"{rate:.1f}",
        "BENCH_USERS": str(users),
        "BENCH_PATH": request.path,
        "BENCH_METHOD": request.method,
        "BENCH_BODY": request.body,
        "BENCH_TOKEN": request.token,
        "BENCH_OUT": str(out),
        "BENCH_WARMUP_SECONDS": "3",
    }
    if request.fresh_ids is not None:
        env["BENCH_ID_FIRST"], env["BENCH_ID_LAST"] = map(str, request.fresh_ids)
    argv = [
        PYTHON, "-m", "locust", "-f", str(BENCH_DIR / "fixed_rate.py"), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "2",
        "--host", base_url, "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    out.unlink(missing_ok=True)
    meter = CpuMeter(groups or [])
    meter.start()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise BenchError("locust did not finish in time") from None
    if not out.exists():
        raise BenchError(f"locust wrote no result (exit {process.returncode}):\n{stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(out.read_text())
    summary["users"] = users
    # An open-loop load of this rate costs more per request than wrk's saturation did: less
    # work per wake-up in every process. Locust's start-up (a second or two) is included.
    summary["cpu_us_per_request"] = {
        name: per_request_us(used, summary["sent"]) for name, used in meter.stop().items()
    }
    return summary
