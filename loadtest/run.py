"""One gated run: check, seed, drive, read both sides, judge, report.

The test window's edges are made exact on the server's side by waiting for a scrape of every
replica after seeding (so the "before" counters hold the seeding and nothing of the test) and
again after Locust has exited (so the "after" counters hold the whole test).
"""

from __future__ import annotations

import contextlib
import json
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
from loadtest.model import SideNumbers, Window, side_from_json
from loadtest.prom import Prometheus, PrometheusError
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
        create_data(settings.host, settings.items, settings.owners, echo).save(target)
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


def print_outcome(checks: list[Check], sides: tuple[SideNumbers, SideNumbers], echo: Echo) -> None:
    echo("")
    for check in checks:
        echo(f"  {check.describe()}")
    c, s = sides
    echo(
        f"  client: {c.requests:,} requests, {c.throughput_rps:,.1f}/s, {c.failures:,} failed; "
        f"server: {s.requests:,} requests, {s.throughput_rps:,.1f}/s, {s.failures:,} 5xx"
    )


def run(settings: Settings, echo: Echo = print) -> int:
    thresholds = Thresholds.load(settings.thresholds)
    prometheus = Prometheus(settings.prometheus_url, settings.monitoring_auth)
    notes = preflight.check(settings, prometheus)
    run_id, folder = new_folder(settings.reports_dir)
    echo(f"load test {run_id}: {settings.users} users for {settings.duration}")
    for note in notes:
        echo(f"  {note}")
    seed_file = _seed(settings, folder, echo)
    interval = prometheus.scrape_interval()
    wait = 3 * interval + 10
    prometheus.wait_for_scrape("api", time.time(), wait)
    preflight.server_metrics(prometheus)
    try:
        window = run_headless(settings, folder, seed_file, run_id, lambda line: echo(f"  {line}"))
        stopped = time.time()
        prometheus.wait_for_scrape("api", stopped, wait)
        with contextlib.suppress(PrometheusError):  # live numbers only; not worth failing over
            prometheus.wait_for_scrape("pushgateway", stopped, wait)
    finally:
        _forget_pushed(settings, run_id)
    edges = server.Edges(window, time.time())
    reader = server.ServerReader(prometheus, edges)
    client_numbers = client.numbers(folder, window, thresholds)
    server_numbers = reader.numbers(thresholds)
    extras = reader.extras()
    checks = [
        *judge(thresholds, [client_numbers, server_numbers]),
        exceptions_check(client.exceptions(folder)),
    ]
    verdict = verdict_of(checks)
    names = {r.instance: r.name for r in extras.replicas}
    drawn = charts.draw_all(
        folder, client.series(folder), server.series(prometheus, edges, interval), names, window
    )
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
    )
    report.write(result)
    print_outcome(checks, (client_numbers, server_numbers), echo)
    echo(f"  {annotation}")
    echo(f"\n{verdict}: report in {folder}/index.html (summary.md beside it)")
    return 0 if verdict == "PASS" else 1


def ui(settings: Settings, echo: Echo = print) -> int:
    prometheus = Prometheus(settings.prometheus_url, settings.monitoring_auth)
    for note in preflight.check(settings, prometheus):
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
    checks = [
        *judge(Thresholds.load(thresholds_file), sides),
        exceptions_check(int(data.get("exceptions", 0))),
    ]
    print_outcome(checks, sides, echo)
    verdict = verdict_of(checks)
    window = Window(**data["window"])
    echo(f"\n{verdict} against {thresholds_file} (run {data['run_id']}, {window.seconds:.0f} s)")
    return 0 if verdict == "PASS" else 1
