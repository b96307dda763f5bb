"""When each simulated user sends, and the tally of what the users offered (no Locust here).

A user's requests arrive as a Poisson process at its rate (exponential gaps), whatever the
latency, as a population of independent people would. One user never has two requests in flight:
when arrivals come due while it still waits for an answer, the first is sent as soon as the answer
is in and the others are missed, not caught up with a burst. Every arrival, sent or missed, is
counted in its wall-clock second: that tally is what the run offered, and the gate compares the
requests answered per second with it (thresholds.py). Against its planned rate
(users x rate) a run differs by the Poisson draw alone, several percent in a short run, so
the tally, not the plan, is what throughput is judged by. A stack that answers slowly makes
users miss arrivals, so it falls short of what was offered.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any


class Tally:
    """Arrivals per wall-clock second (int(time.time()), as Locust counts requests), and when
    the last user started: the end of the ramp-up, measured rather than planned (Locust's own
    "spawning complete" can come seconds late while it waits for its workers' reports)."""

    def __init__(self) -> None:
        self.per_second: dict[int, int] = {}
        self.last_start: float | None = None

    def add(self, at: float, count: int = 1) -> None:
        second = int(at)
        self.per_second[second] = self.per_second.get(second, 0) + count

    def user_started(self, at: float) -> None:
        self.last_start = max(at, self.last_start or at)

    def merge(self, other: Mapping[str, Any]) -> None:
        """Add what another process drained (its `report()`)."""
        for second, count in other.get("per_second", {}).items():
            self.add(int(second), count)
        if other.get("last_start") is not None:
            self.user_started(float(other["last_start"]))

    def report(self) -> dict[str, Any]:
        """What was counted since the last report, to send on (a worker reports each once)."""
        counted, self.per_second = self.per_second, {}
        return {"per_second": counted, "last_start": self.last_start}


# This process's users' arrivals (a Locust worker, or the single process with WORKERS=0).
OFFERED = Tally()


class Arrivals:
    """One user's schedule. Its first request goes out as it starts (Locust runs the first task
    at once), the next ones at Poisson arrival times."""

    def __init__(self, rate: float, rng: random.Random, tally: Tally, now: float) -> None:
        self.rate = rate
        self.rng = rng
        self.tally = tally
        self.missed = 0
        tally.user_started(now)
        tally.add(now)
        self.next = now + rng.expovariate(rate)

    def wait(self, now: float) -> float:
        """Seconds to wait before the next request, called when the previous one is answered."""
        due = 0
        while self.next <= now:
            self.tally.add(self.next)
            self.next += self.rng.expovariate(self.rate)
            due += 1
        if due:
            self.missed += due - 1
            return 0.0
        at, self.next = self.next, self.next + self.rng.expovariate(self.rate)
        self.tally.add(at)
        return at - now
