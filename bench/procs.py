"""CPU time and memory of process trees, read from /proc.

CPU time per request is the benchmark's main measure: on a shared 2-core machine wall-clock
throughput moves ±20% between runs, while the CPU a process spends per request barely moves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return text[text.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree(root: int, tree_map: dict[int, list[int]] | None = None) -> list[int]:
    """root and every live descendant."""
    tree_map = tree_map if tree_map is not None else children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree_map.get(pid, []))
    return found


def cpu_seconds(pids: Iterable[int], *, reaped: bool = True) -> float:
    """utime + stime of each process, plus (reaped) what its reaped children used.

    Counting the reaped children (cutime + cstime) keeps a tree's total continuous when a child
    exits between two samples, a PostgreSQL backend closing for one: its time moves into the
    parent's cutime instead of vanishing.
    """
    last = 15 if reaped else 13
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            ticks += sum(int(value) for value in fields[11:last])
    return ticks / CLOCK_TICKS


def per_request_us(seconds: float, requests: int) -> float:
    """CPU seconds spent over `requests` requests, in µs per request."""
    return seconds / max(requests, 1) * 1e6


def rss_bytes(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[21]) * PAGE_SIZE if fields is not None else 0


@dataclass
class Group:
    """A named set of process trees whose CPU is sampled together (the API replicas, nginx...)."""

    name: str
    roots: Sequence[int]
    # False for supervisord: its children are the very programs measured in other groups.
    with_children: bool = True

    def pids(self) -> list[int]:
        if not self.with_children:
            return list(self.roots)
        tree_map = children_map()
        return [pid for root in self.roots for pid in tree(root, tree_map)]

    def cpu(self, pids: Iterable[int] | None = None) -> float:
        return cpu_seconds(self.pids() if pids is None else pids, reaped=self.with_children)


class CpuMeter:
    """Samples several groups at once: `start()` before a run, `stop()` after it."""

    def __init__(self, groups: Sequence[Group]) -> None:
        self.groups = list(groups)
        self._before: dict[str, tuple[list[int], float]] = {}

    def start(self) -> None:
        self._before = {}
        for group in self.groups:
            pids = group.pids()
            self._before[group.name] = (pids, group.cpu(pids))

    def stop(self) -> dict[str, float]:
        """CPU seconds each group used since start(), children born meanwhile included."""
        used = {}
        for group in self.groups:
            pids_before, before = self._before[group.name]
            # A process that exited is reaped into its parent's cutime; one born since start
            # counts from zero, which is what it used.
            pids = sorted(set(pids_before) | set(group.pids()))
            used[group.name] = max(group.cpu(pids) - before, 0.0)
        return used
