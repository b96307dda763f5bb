"""`make bench`: the stack's paths measured against its ceilings, side by side in one run.

    uv run python -m bench.run [--duration 10] [--replicas 2] [--profile] [--only cached,hello]

Everything runs on loopback, bounded in time (--budget, 15 minutes by default; a run takes 11):

1. Ceilings, each served the way a replica is (one Uvicorn process, uvloop + httptools):
   nginx answering a constant, a bare ASGI app, a FastAPI hello. Then the libraries' floor
   (bench/floor_rows.py): the read with nothing of the stack's own, FastAPI + redis-py (cached),
   with the instrumentator, and FastAPI + redis-py + SQLAlchemy (uncached), three pairs each.
2. A native stack (`python -m stack.native up`) in a temporary folder on free ports, seeded with
   items, and its paths through nginx: cached GET /items/{id}, uncached GET /items/{id} (a fresh
   id per request, so every one misses Redis and reads PostgreSQL), GET /items (a page), and
   POST /items.
3. With `--only tls` (make bench-tls) and only then: the cached GET over plain HTTP and HTTPS
   side by side (kept-alive, one connection, a connection per request), and full handshakes
   (bench/tls_rows.py): what TLS costs at nginx.
4. Instrumentation overhead: the cached path with METRICS_ENABLED=false on one replica and true
   on the other, side by side, each driven straight by its own wrk, then swapped.
5. For the rows with a CPU target (cached and uncached), two more (hello, path) pairs of runs:
   the verdict is the median ratio. And their fixed-rate latency again, at 70% of the rate the
   stack sustains while Locust itself runs on the same cores.

Each row is wrk at fixed concurrency (-t1 -c64) for throughput and latency, then a fixed-rate
Locust run at 70% of that throughput (bench/fixed_rate.py), whose latencies are timed from the
scheduled send and so free of coordinated omission. CPU per request comes from the processes'
own CPU time (/proc/<pid>/stat), summed over every API replica; nginx, PostgreSQL, Redis and
supervisord (which copies every log line) are reported on their own. Results go to
bench/results/ as JSON and markdown, and the table is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ceilings import ceiling_app, run_ceilings
from bench.config import LABELS, RESULTS_DIR, BenchError, Deadline, Options
from bench.floor_rows import run_floors
from bench.measure import HelloReference
from bench.report import markdown, row_records, targets, write_results
from bench.stack_rows import run_stack
from stack.machine import load_average, machine


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise BenchError(
            f"missing {', '.join(missing)}: run `apt-get install -y {' '.join(missing)}` "
            "(or `make bench`, which installs them as root)"
        )


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", "10")))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--fixed-seconds", type=int, default=15)
    parser.add_argument("--fixed-fraction", type=float, default=0.7)
    parser.add_argument(
        "--replicas",
        type=int,
        default=int(os.environ.get("BENCH_REPLICAS", str(os.cpu_count() or 2))),
    )
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--budget", type=int, default=int(os.environ.get("BENCH_BUDGET", "900")))
    parser.add_argument("--profile", action="store_true", default=bool(os.environ.get("PROFILE")))
    parser.add_argument("--only", default="", help="comma-separated rows: " + ",".join(LABELS))
    args = parser.parse_args(argv)
    only = frozenset(filter(None, args.only.split(",")))
    if unknown := only - set(LABELS):
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    return Options(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        fixed_seconds=args.fixed_seconds,
        fixed_fraction=args.fixed_fraction,
        replicas=args.replicas,
        items=args.items,
        budget=args.budget,
        profile=args.profile,
        only=only,
    )


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Unwinds through every `finally`, so the stack and the ceiling servers are taken down.
    raise SystemExit(128 + signum)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in load_average())


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    deadline = Deadline(options.budget)
    try:
        check_tools()
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "options": {k: v for k, v in asdict(options).items() if k != "only"},
            "load_before": _load(),
        }
        print(f"make bench: load average {report['load_before']}", flush=True)
        with (
            tempfile.TemporaryDirectory(prefix="bench-") as tmp,
            ceiling_app("bench.apps.hello:app", "/hello") as (hello_url, hello_pid),
        ):
            folder = Path(tmp)
            hello = HelloReference(hello_url, hello_pid)
            rows = run_ceilings(options, folder, deadline, hello)
            rows += run_floors(options, folder, deadline, hello)
            stack_rows, extra = run_stack(options, folder, deadline, hello)
            rows += stack_rows
            extra["hello_us_samples"] = [round(v, 1) for v in hello.samples]
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["load_after"] = _load()
    report["extra"] = extra
    report["targets"] = targets({row.name: row for row in rows}, extra)
    report["rows"] = row_records(rows)
    text = markdown(report, rows)
    stamp = write_results(report, text)
    print("\n" + text)
    print(f"written: bench/results/bench-{stamp}.json and .md (and latest.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
