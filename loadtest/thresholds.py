"""The SLO gate: the thresholds file, and every limit checked on both sides of a run."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.model import SideNumbers


class ThresholdsError(ValueError):
    pass


@dataclass(frozen=True)
class Group:
    name: str
    routes: tuple[str, ...]
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Thresholds:
    max_error_ratio: float
    # Share of the offered rate (schedule.py) that must be answered per second after ramp-up.
    min_throughput_ratio: float
    groups: tuple[Group, ...]

    @classmethod
    def load(cls, path: Path) -> Thresholds:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ThresholdsError(f"{path}: {exc}") from exc
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "thresholds") -> Thresholds:
        overall = data.get("overall")
        if isinstance(overall, Mapping) and "min_throughput_rps" in overall:
            raise ThresholdsError(
                f"{where}: min_throughput_rps is gone: throughput is judged against the rate the "
                "run offered, so set min_throughput_ratio (e.g. 0.95) instead"
            )
        try:
            overall = data["overall"]
            groups = tuple(
                Group(
                    name=name,
                    routes=tuple(str(route) for route in group["routes"]),
                    p95_ms=float(group["p95_ms"]),
                    p99_ms=float(group["p99_ms"]),
                )
                for name, group in data["groups"].items()
            )
            thresholds = cls(
                max_error_ratio=float(overall["max_error_ratio"]),
                min_throughput_ratio=float(overall["min_throughput_ratio"]),
                groups=groups,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ThresholdsError(f"{where}: missing or malformed setting: {exc}") from exc
        if not 0 < thresholds.min_throughput_ratio <= 1:
            raise ThresholdsError(
                f"{where}: min_throughput_ratio must be above 0 and at most 1, "
                f"got {thresholds.min_throughput_ratio}"
            )
        routes = [route for group in groups for route in group.routes]
        if not groups or len(routes) != len(set(routes)):
            raise ThresholdsError(f"{where}: each route must belong to exactly one group")
        return thresholds


@dataclass(frozen=True)
class Check:
    side: str
    name: str
    unit: str
    limit: float
    actual: float | None
    at_most: bool  # True: actual must not exceed limit; False: must reach it

    @property
    def passed(self) -> bool:
        if self.actual is None:
            return False
        return self.actual <= self.limit if self.at_most else self.actual >= self.limit

    def describe(self) -> str:
        """One line: what was measured against what, and on a breach by how much."""
        verdict = "ok  " if self.passed else "FAIL"
        label = f"{verdict} {self.side:<6} {self.name}"
        if self.actual is None:
            return f"{label}: no data (nothing measured against {self.format_value(self.limit)})"
        relation = (
            ("<=" if self.passed else ">") if self.at_most else (">=" if self.passed else "<")
        )
        text = (
            f"{label}: {self.format_value(self.actual)} {relation} {self.format_value(self.limit)}"
        )
        if self.passed:
            return text
        delta = self.actual - self.limit
        share = f", {delta / self.limit:+.0%}" if self.limit else ""
        word = "over by" if self.at_most else "short by"
        return f"{text} ({word} {self.format_value(abs(delta))}{share})"

    def format_value(self, value: float) -> str:
        if self.unit == "ratio":
            return f"{value:.2%}"
        if self.unit == "count":
            return f"{value:,.0f}"
        if 0 < value < 0.1:
            return f"{value:.3g} {self.unit}"  # a limit such as 0.001 ms must not read as 0.0
        return f"{value:,.1f} {self.unit}"


def throughput_check(thresholds: Thresholds, side: SideNumbers, offered_rps: float | None) -> Check:
    """Requests answered per second after ramp-up against the rate the users offered then."""
    ratio = thresholds.min_throughput_ratio
    if offered_rps is None:
        return Check(side.side, "throughput (offered rate unknown)", "req/s", 0.0, None, False)
    return Check(
        side.side,
        f"throughput ({ratio:.0%} of {offered_rps:,.1f} req/s offered)",
        "req/s",
        ratio * offered_rps,
        side.steady_rps,
        False,
    )


def checks(thresholds: Thresholds, side: SideNumbers, offered_rps: float | None) -> list[Check]:
    """Every limit of the file against one side's numbers, in file order."""
    result = [
        Check(
            side.side, "error ratio", "ratio", thresholds.max_error_ratio, side.error_ratio, True
        ),
        throughput_check(thresholds, side, offered_rps),
    ]
    for group in thresholds.groups:
        latency = side.groups.get(group.name)
        for name, limit in (("p95", group.p95_ms), ("p99", group.p99_ms)):
            actual = latency.get(name) if latency else None
            result.append(Check(side.side, f"{group.name} {name}", "ms", limit, actual, True))
    return result


def judge(
    thresholds: Thresholds, sides: Iterable[SideNumbers], offered_rps: float | None
) -> list[Check]:
    return [check for side in sides for check in checks(thresholds, side, offered_rps)]
