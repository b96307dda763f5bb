"""The report's PNG charts over the test window: client (Locust) and server (API metrics) views.

Client lines are per second: exact request counts, and Locust's percentiles over its last 10 s.
Server lines come from the load test's own reads of the replicas' counters, once a second
(sampler.py), so they have the client's resolution; percentiles likewise over the last 10 s.
Where the replicas cannot be read directly they come from Prometheus, one point per scrape
interval. Either way each point is what the counters counted since the previous read, so
nothing from before the test leaks in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadtest.client import ClientSeries
from loadtest.model import Window
from loadtest.prom import Series
from loadtest.server import ServerSeries

COLORS = {"p50": "tab:green", "p95": "tab:orange", "p99": "tab:red"}


def _axes(title: str, ylabel: str) -> tuple[Figure, Axes]:
    figure, axes = plt.subplots(figsize=(9, 4.2), dpi=100)
    axes.set_title(title, loc="left", fontsize=11)
    axes.set_xlabel("seconds since the first user started")
    axes.set_ylabel(ylabel)
    axes.grid(visible=True, alpha=0.3)
    return figure, axes


def _server_line(axes: Axes, series: Sequence[Series], window: Window, **style: object) -> None:
    for one in series:
        points = [(t - window.start, v) for t, v in one.points if not math.isnan(v)]
        if points:
            axes.plot(*zip(*points, strict=True), **style)  # type: ignore[arg-type]


def _finish(
    figure: Figure, axes: Axes, window: Window, path: Path, extra: Axes | None = None
) -> Path:
    axes.axvspan(0, window.seconds, color="tab:blue", alpha=0.05, label="test window")
    axes.set_xlim(left=min(axes.get_xlim()[0], -1))
    axes.set_ylim(bottom=0)
    handles, labels = axes.get_legend_handles_labels()
    if extra is not None:
        more_handles, more_labels = extra.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    # Below the plot, so no line is ever hidden behind it.
    axes.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncols=4
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _client_x(client: ClientSeries, window: Window) -> list[float]:
    return [t - window.start for t in client.time]


def throughput(client: ClientSeries, server: ServerSeries, window: Window, path: Path) -> Path:
    figure, axes = _axes("Throughput", "requests/s")
    seconds = [t - window.start for t in client.second]
    axes.plot(seconds, client.rps, color="tab:blue", label="client (Locust), per second")
    _server_line(
        axes,
        server.throughput,
        window,
        color="black",
        label=f"server: {server.source}",
    )
    users = axes.twinx()
    users.plot(_client_x(client, window), client.users, color="grey", ls=":", label="users")
    users.set_ylabel("users")
    users.set_ylim(bottom=0)
    return _finish(figure, axes, window, path, users)


def latency(client: ClientSeries, server: ServerSeries, window: Window, path: Path) -> Path:
    figure, axes = _axes(
        "Latency percentiles over the last 10 s: client dashed, server solid "
        f"(every {server.step})",
        "ms",
    )
    x = _client_x(client, window)
    for name, values in client.latency.items():
        points = [(t, v) for t, v in zip(x, values, strict=True) if v is not None]
        if points:
            style = {"color": COLORS[name], "ls": "--"}
            axes.plot(*zip(*points, strict=True), label=f"client {name}", **style)  # type: ignore[arg-type]
    for name, series in server.latency.items():
        scaled = [Series(s.labels, [(t, v * 1000) for t, v in s.points]) for s in series]
        _server_line(axes, scaled, window, color=COLORS[name], label=f"server {name}")
    return _finish(figure, axes, window, path)


def errors(client: ClientSeries, server: ServerSeries, window: Window, path: Path) -> Path:
    figure, axes = _axes("Errors", "per second")
    axes.plot(
        [t - window.start for t in client.second],
        client.failures_per_s,
        color="tab:red",
        label="client failures (unexpected answers)",
    )
    _server_line(axes, server.errors_5xx, window, color="black", label="server 5xx")
    _server_line(
        axes,
        server.errors_4xx,
        window,
        color="tab:purple",
        ls="--",
        label="server 4xx (mostly provoked)",
    )
    return _finish(figure, axes, window, path)


def replicas(server: ServerSeries, names: dict[str, str], window: Window, path: Path) -> Path:
    figure, axes = _axes(f"Traffic per replica (server, per {server.step})", "requests/s")
    for one in sorted(server.replicas, key=lambda s: s.labels.get("instance", "")):
        instance = one.labels.get("instance", "")
        label = names.get(instance, instance)
        _server_line(axes, [one], window, label=label)
    return _finish(figure, axes, window, path)


def draw_all(
    folder: Path,
    client: ClientSeries,
    server: ServerSeries,
    names: dict[str, str],
    window: Window,
) -> list[Path]:
    return [
        throughput(client, server, window, folder / "throughput.png"),
        latency(client, server, window, folder / "latency.png"),
        errors(client, server, window, folder / "errors.png"),
        replicas(server, names, window, folder / "replicas.png"),
    ]
