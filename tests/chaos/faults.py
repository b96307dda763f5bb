"""Making faults for real: signals to the chaos stack's own processes, found by pid, not name."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def children(pid: int) -> list[int]:
    """Direct children of `pid` (PostgreSQL's backends put themselves in their own sessions, so
    a process-group signal would miss them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ")".
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def frozen(pid: int, *, with_children: bool = False) -> Iterator[None]:
    """SIGSTOP for the duration of the block: the process holds its sockets and answers nothing,
    like a dependency stuck on a lock, a full disk or a dead NFS mount. Always resumed."""
    os.kill(pid, signal.SIGSTOP)
    # The parent first: a stopped PostgreSQL postmaster forks no new backend meanwhile.
    stopped = [pid]
    try:
        if with_children:
            for child in children(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGSTOP)
                    stopped.append(child)
        yield
    finally:
        for process in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGCONT)


def poll(check: Callable[[], T | None], *, timeout: float, interval: float = 0.2) -> T:
    """The first truthy result of `check`, or AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:.0f}s: {check}")
        time.sleep(interval)
