"""What counters counted over a stretch of time, from their raw samples.

Counters are read from raw samples (each with the time of the scrape that took it), never from
an instant query at the window's start: that returns the newest sample of each series within
Prometheus's 5-minute lookback, which right after a restart is the previous process's value for
every series the new process has not created yet (label combinations appear on first use), and
subtracting it hides requests, 5xx included. Instead each sample is compared with the one the
same series had at the target's previous successful scrape, and counts from zero when:

- the series was missing from a successful scrape in between, or is new since the target's
  first scrape in the data (its labels were used for the first time, or by a new process);
- the process reporting it started anew (`process_start_time_seconds` changed), even when no
  scrape saw the gap, as when Prometheus was down while the replicas restarted;
- its value went down (a restart nothing else revealed; what `rate()` assumes too).

A failed scrape (`up == 0`) proves nothing about a series, so only successful ones count. The
first sample of a series seen from the target's first scrape in the data is only a base.
The same arithmetic serves Prometheus's samples and the load test's own 1-s reads (sampler.py).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from loadtest.prom import Series

Key = tuple[str, ...]


@dataclass(frozen=True)
class Scrapes:
    """The successful scrapes of one target: their times, ascending, and the start time of the
    process each one read (when the target exports process_start_time_seconds)."""

    times: list[float]
    process_starts: Mapping[float, float] = field(default_factory=dict)

    def between(self, after: float, before: float) -> bool:
        """Whether a successful scrape happened strictly between the two instants."""
        index = bisect.bisect_right(self.times, after)
        return index < len(self.times) and self.times[index] < before

    def first(self) -> float | None:
        return self.times[0] if self.times else None

    def same_process(self, earlier: float, later: float) -> bool:
        first, second = self.process_starts.get(earlier), self.process_starts.get(later)
        return first is None or second is None or first == second


NO_SCRAPES = Scrapes([])


def increments(
    points: Iterable[tuple[float, float]], scrapes: Scrapes
) -> Iterator[tuple[float, float]]:
    """(sample time, what the series counted since its previous scrape) for each sample after
    the first one that is only a base (see the module's rules)."""
    previous: tuple[float, float] | None = None
    first_scrape = scrapes.first()
    for at, value in points:
        if previous is None:
            if first_scrape is not None and first_scrape < at:
                yield at, value  # missing from an earlier successful scrape: new since then
        else:
            before, old = previous
            continuous = (
                value >= old
                and not scrapes.between(before, at)
                and scrapes.same_process(before, at)
            )
            yield at, (value - old if continuous else value)
        previous = (at, value)


@dataclass(frozen=True)
class History:
    """Raw samples of some series and the successful scrapes of their targets (by instance)."""

    series: list[Series]
    scrapes: Mapping[str, Scrapes]

    def counted(self, by: Iterable[str], start: float, end: float) -> dict[Key, float]:
        """What the series counted in (start, end], summed by the `by` labels."""
        by = tuple(by)
        result: dict[Key, float] = {}
        for one in self.series:
            scrapes = self.scrapes.get(one.labels.get("instance", ""), NO_SCRAPES)
            key = tuple(one.labels.get(label, "") for label in by)
            total = sum(n for at, n in increments(one.points, scrapes) if start < at <= end)
            result[key] = result.get(key, 0.0) + total
        return result

    def steps(self, by: Iterable[str], start: float, step: float) -> dict[Key, dict[float, float]]:
        """What the series counted per `step` seconds after `start`: {step middle: count}, each
        sample's increment filed under the step its scrape fell in."""
        by = tuple(by)
        result: dict[Key, dict[float, float]] = {}
        for one in self.series:
            scrapes = self.scrapes.get(one.labels.get("instance", ""), NO_SCRAPES)
            group = result.setdefault(tuple(one.labels.get(label, "") for label in by), {})
            for at, n in increments(one.points, scrapes):
                if at > start:
                    middle = start + (math.ceil((at - start) / step) - 0.5) * step
                    group[middle] = group.get(middle, 0.0) + n
        return result

    def rate(self, start: float, end: float) -> tuple[float, float] | None:
        """(count, per second) over the scrapes of each target inside [start, end], summed over
        targets: from each target's first scrape at or after `start` to its last at or before
        `end`. A target scraped fewer than twice there is left out (it was down: what it did
        not answer counts against the rate); None when no target was."""
        spans: dict[str, tuple[float, float]] = {}
        for instance, scrapes in self.scrapes.items():
            inside = [t for t in scrapes.times if start <= t <= end]
            if len(inside) >= 2:
                spans[instance] = (inside[0], inside[-1])
        if not spans:
            return None
        count = per_second = 0.0
        for one in self.series:
            instance = one.labels.get("instance", "")
            if instance not in spans:
                continue
            first, last = spans[instance]
            counted = sum(
                n for at, n in increments(one.points, self.scrapes[instance]) if first < at <= last
            )
            count += counted
            per_second += counted / (last - first)
        return count, per_second


def scrapes_from(up: Iterable[Series], starts: Iterable[Series] = ()) -> dict[str, Scrapes]:
    """Scrapes per instance from `up` samples (1: a successful scrape) and, optionally, the
    process_start_time_seconds samples of the same targets."""
    process: dict[str, dict[float, float]] = {}
    for one in starts:
        process.setdefault(one.labels.get("instance", ""), {}).update(one.points)
    return {
        one.labels.get("instance", ""): Scrapes(
            sorted(t for t, v in one.points if v == 1),
            process.get(one.labels.get("instance", ""), {}),
        )
        for one in up
    }
