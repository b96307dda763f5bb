"""A row of the table and how it is measured: wrk with the CPU each process group spent meanwhile,
and the FastAPI hello every CPU ratio is taken against."""

# ruff: noqa: RUF001, RUF003 - the log says ×
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import Options
from bench.procs import CpuMeter, Group, per_request_us
from bench.wrk import WrkResult, wrk
from stack.machine import load_average


@dataclass
class Row:
    name: str
    label: str
    primary: str  # the group whose CPU per request is the row's measure
    wrk: WrkResult
    cpu_seconds: dict[str, float]
    fixed: dict[str, Any] | None = None
    cache: dict[str, float] | None = None
    # The FastAPI hello's CPU per request, measured just before this row (see HelloReference).
    hello_us: float = math.nan
    # The machine's 1-minute load when the row ended: how much else was running.
    load: float = field(default_factory=lambda: load_average()[0])
    # More (path ÷ hello) CPU ratios, each from its own pair of back-to-back runs.
    more_ratios: list[float] = field(default_factory=list)

    def cpu_us(self, group: str | None = None) -> float:
        used = self.cpu_seconds.get(group or self.primary)
        if used is None or not self.wrk.requests:
            return math.nan
        return used / self.wrk.requests * 1e6

    @property
    def ratios(self) -> list[float]:
        return [self.cpu_us() / self.hello_us, *self.more_ratios]

    @property
    def ratio(self) -> float:
        """The median of the row's ratios: one pair of runs on a shared machine varies by ±15%."""
        return statistics.median(self.ratios)


def metered_wrk(
    url: str, seconds: int, connections: int, groups: list[Group], script: Path | None = None
) -> tuple[WrkResult, dict[str, float]]:
    """wrk, and the CPU seconds each group spent while it ran."""
    meter = CpuMeter(groups)
    meter.start()
    result = wrk(url, seconds, connections, script)
    return result, meter.stop()


@dataclass
class HelloReference:
    """The FastAPI hello, running the whole time and measured again right before each stack row.

    Other work on a shared machine changes every process's CPU per request (caches, the other
    hyperthread), by ±20% from one minute to the next; a ratio of two numbers measured a few
    seconds apart cancels most of that, one against a hello measured minutes earlier does not.
    """

    url: str
    pid: int
    samples: list[float] = field(default_factory=list)

    def measure(self, seconds: int, connections: int) -> float:
        wrk(self.url, 1, connections)
        result, used = metered_wrk(self.url, seconds, connections, [Group("hello", [self.pid])])
        cpu_us = per_request_us(used["hello"], result.requests)
        self.samples.append(cpu_us)
        return cpu_us


def measure(
    name: str,
    url: str,
    groups: list[Group],
    primary: str,
    options: Options,
    *,
    script: Path | None = None,
    before_run: Callable[[], None] | None = None,
) -> tuple[WrkResult, dict[str, float]]:
    if before_run is not None:
        before_run()
    # Warm-up: connections, caches, code paths; its CPU is not counted.
    wrk(url, options.warmup, options.connections, script)
    if before_run is not None:
        before_run()
    result, used = metered_wrk(url, options.duration, options.connections, groups, script)
    per_request = per_request_us(used[primary], result.requests)
    print(
        f"  {name:<12} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  {primary} {per_request:7.1f} µs/req",
        flush=True,
    )
    return result, used


def ratio_pair(
    url: str,
    script: Path | None,
    api: Group,
    hello: HelloReference,
    options: Options,
    before_run: Callable[[], None] | None = None,
) -> float:
    """One more (path ÷ hello) CPU ratio: the hello, then the path, back to back."""
    hello_us = hello.measure(options.duration, options.connections)
    if before_run is not None:
        before_run()
    result, used = metered_wrk(url, options.duration, options.connections, [api], script)
    ratio = per_request_us(used[api.name], result.requests) / hello_us
    print(f"  {'':<12} another pair: {ratio:.2f} × hello", flush=True)
    return ratio
