"""One gated run: check, seed, drive, read both sides, judge, report.

The test window's edges are made exact on the server's side by waiting for a scrape of every
replica after seeding (so the "before" counters hold the seeding and nothing of the test) and
again after Locust has exited (so the "after" counters hold the whole test). Meanwhile the
replicas are also read once a second (sampler.py) for the server's per-second numbers.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from loadtest import charts, client, grafana, preflight, report, server
from loadtest.httpjson import HttpError, call
from loadtest.locust_procs import run_headless, run_ui
from loadtest.model import Offered, ServerExtras, SideNumbers, Window, side_from_json
from loadtest.prom import Prometheus, PrometheusError
from loadtest.sampler import BUCKETS, REQUESTS, Sampler
from loadtest.seed import Seed, create_data
from loadtest.settings import Settings
from loadtest.thresholds import Check, Thresholds, judge
from stack.machine import machine as stack_machine

Echo = Callable[[str], None]


def new_folder(reports_dir: Path) -> tuple[str, Path]:
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", *(f"-{n}" for n in range(2, 100))):
        folder = reports_dir / f"{run_id}{suffix}"
        with contextlib.suppress(FileExistsError):
            folder.mkdir(parents=True)
            return f"{run_id}{suffix}", folder
    raise RuntimeError(f"no free report folder for {run_id} in {reports_dir}")


def machine() -> dict[str, Any]:
    found = stack_machine()
    return {
        "Machine": f"{found['cpus']} CPUs {found['cpu_model']}".strip(),
        "Memory": f"{found['memory_gb']:.1f} GiB",
        "System": f"{found['system']} {found['kernel']}",
        "Python / Locust": f"{found['python']} / {version('locust')}",
    }


def settings_summary(settings: Settings) -> dict[str, Any]:
    workers = f"{settings.workers}{' (containers)' if settings.external_workers else ''}"
    return {
        "host": settings.host,
        **({"trusted CA": str(settings.ca)} if settings.ca else {}),
        "users": settings.users,
        "spawn rate (users/s)": settings.spawn_rate,
        "duration": settings.duration,
        "workers": workers,
        "requests/s per user": settings.user_rps,
        "weights reader/writer/careless": (
            f"{settings.reader_weight}/{settings.writer_weight}/{settings.careless_weight}"
        ),
        "data set": f"{settings.items} items of {settings.owners} owners, Zipf s={settings.zipf_s}",
        "one address per user": settings.spread_sources,
        "thresholds": str(settings.thresholds),
    }


def _seed(settings: Settings, folder: Path, echo: Echo) -> Path:
    target = folder / "seed.json"
    if settings.seed_file is not None:
        Seed.load(settings.seed_file)  # refuse a broken file before any load
        shutil.copyfile(settings.seed_file, target)
        echo(f"reusing the data set in {settings.seed_file}")
    else:
        create_data(settings.host, settings.items, settings.owners, echo, settings.ca).save(target)
    return target


def _forget_pushed(settings: Settings, run_id: str) -> None:
    """Delete the run's group, so its last values do not linger as if a test were running."""
    if not settings.pushgateway_url:
        return
    with contextlib.suppress(HttpError):
        call(
            "DELETE",
            f"{settings.pushgateway_url}/metrics/job/locust/run/{urllib.parse.quote(run_id)}",
            headers=settings.monitoring_auth.header if settings.monitoring_auth else None,
        )


def exceptions_check(count: int) -> Check:
    return Check("client", "task exceptions", "count", 0, count, True)


def verdict_of(checks: list[Check]) -> str:
    return "PASS" if all(check.passed for check in checks) else "FAIL"


def print_outcome(
    checks: list[Check],
    offered: Offered | None,
    sides: tuple[SideNumbers, SideNumbers],
    echo: Echo,
) -> None:
    echo("")
    for check in checks:
        echo(f"  {check.describe()}")
    if offered is not None:
        echo(f"  offered: {offered.describe()}")
    c, s = sides
    echo(
        f"  client: {c.requests:,} requests, {c.throughput_rps:,.1f}/s, {c.failures:,} failed; "
        f"server: {s.requests:,} requests, {s.throughput_rps:,.1f}/s, {s.failures:,} 5xx"
    )


def _wait_for_scrapes(prometheus: Prometheus, after: float, wait: float) -> None:
    """Until every replica was scraped after `after` (required: the server's side), and nginx,
    the host and the Pushgateway too where possible (the report's extras, the live numbers)."""
    prometheus.wait_for_scrape("api", after, wait)
    for job in ("nginx", "node", "pushgateway"):
        with contextlib.suppress(PrometheusError):
            prometheus.wait_for_scrape(job, after, wait)


def server_side(
    prometheus: Prometheus,
    sampler: Sampler,
    window: Window,
    stopped: float,
    thresholds: Thresholds,
) -> tuple[SideNumbers, ServerExtras, server.ServerSeries]:
    """The judged numbers from Prometheus; the per-second ones from the run's own reads of the
    replicas when they cover the window, else from Prometheus's scrapes."""
    interval = prometheus.scrape_interval()
    edges = server.Edges(window, time.time())
    reader = server.ServerReader(prometheus, edges, interval)
    if sampler.covers(window.start, stopped):
        requests = sampler.history(REQUESTS)
        sampled = round(sum(requests.counted((), window.start, math.inf).values()))
        buckets = sampler.history(BUCKETS)
        step = sampler.interval
        source = f"the replicas' /metrics, read by the load test every {step:g} s"
    else:
        requests, sampled = reader.requests, None
        buckets = reader.history(f"http_request_duration_seconds_bucket{{{server.API}}}")
        step = max(interval, 1.0)
        source = f"Prometheus, one point per {step:g} s scrape interval"
    numbers = reader.numbers(thresholds, server.steady_rps(requests, window))
    lines = server.series(requests, buckets, window.start, step, source)
    return numbers, reader.extras(sampled), lines


def run(settings: Settings, echo: Echo = print) -> int:
    thresholds = Thresholds.load(settings.thresholds)
    prometheus = Prometheus(settings.prometheus_url, settings.monitoring_auth)
    ready = preflight.check(settings, prometheus)
    notes = ready.notes
    run_id, folder = new_folder(settings.reports_dir)
    echo(f"load test {run_id}: {settings.users} users for {settings.duration}")
    for note in notes:
        echo(f"  {note}")
    seed_file = _seed(settings, folder, echo)
    wait = 3 * prometheus.scrape_interval() + 10
    prometheus.wait_for_scrape("api", time.time(), wait)
    preflight.server_metrics(prometheus)
    sampler = Sampler(ready.metrics_urls or {})
    try:
        with sampler:
            window, arrivals = run_headless(
                settings, folder, seed_file, run_id, lambda line: echo(f"  {line}")
            )
            stopped = time.time()
            _wait_for_scrapes(prometheus, stopped, wait)
        sampler.read_once()  # one read after everything, however fast Prometheus was
    finally:
        _forget_pushed(settings, run_id)
    offered = Offered.count(arrivals, window, settings.users * settings.user_rps)
    client_numbers = client.numbers(folder, window, thresholds)
    server_numbers, extras, lines = server_side(prometheus, sampler, window, stopped, thresholds)
    checks = [
        *judge(thresholds, [client_numbers, server_numbers], offered.steady_rps),
        exceptions_check(client.exceptions(folder)),
    ]
    verdict = verdict_of(checks)
    names = {r.instance: r.name for r in extras.replicas}
    drawn = charts.draw_all(folder, client.series(folder), lines, names, window)
    annotation = grafana.annotate(
        settings.grafana_url,
        settings.grafana_auth,
        window,
        verdict,
        f"Load test {run_id}: {verdict}, {client_numbers.requests:,} requests, "
        f"{settings.users} users (loadtest/reports/{run_id})",
    )
    result = report.RunReport(
        run_id=run_id,
        folder=folder,
        verdict=verdict,
        window=window,
        offered=offered,
        client=client_numbers,
        server=server_numbers,
        extras=extras,
        checks=checks,
        settings=settings_summary(settings),
        machine=machine(),
        notes=[*notes, annotation],
        failures=client.top_failures(folder),
        exceptions=int(checks[-1].actual or 0),
        charts=drawn,
        server_source=lines.source,
        server_step=lines.step,
        server_per_second=lines.throughput[0].points,
    )
    report.write(result)
    print_outcome(checks, offered, (client_numbers, server_numbers), echo)
    echo(f"  {annotation}")
    echo(f"\n{verdict}: report in {folder}/index.html (summary.md beside it)")
    return 0 if verdict == "PASS" else 1


def ui(settings: Settings, echo: Echo = print) -> int:
    prometheus = Prometheus(settings.prometheus_url, settings.monitoring_auth)
    for note in preflight.check(settings, prometheus).notes:
        echo(f"  {note}")
    run_id, folder = new_folder(settings.reports_dir)
    seed_file = _seed(settings, folder, echo)
    echo(f"Locust's web UI: http://{settings.web_host}:{settings.web_port} (Ctrl-C to stop)")
    try:
        return run_ui(settings, folder, seed_file, run_id)
    finally:
        _forget_pushed(settings, run_id)


def recheck(folder: Path, thresholds_file: Path, echo: Echo = print) -> int:
    """Judge a finished run again, against another thresholds file (same group names)."""
    data = json.loads((folder / "results.json").read_text())
    sides = (side_from_json(data["client"]), side_from_json(data["server"]))
    offered = Offered(**data["offered"]) if "offered" in data else None
    checks = [
        *judge(Thresholds.load(thresholds_file), sides, offered.steady_rps if offered else None),
        exceptions_check(int(data.get("exceptions", 0))),
    ]
    print_outcome(checks, offered, sides, echo)
    verdict = verdict_of(checks)
    window = Window(**data["window"])
    echo(f"\n{verdict} against {thresholds_file} (run {data['run_id']}, {window.seconds:.0f} s)")
    return 0 if verdict == "PASS" else 1
