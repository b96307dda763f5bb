"""Faults made for real with signals to a stack's own processes, found by pid, never by name."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path


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
    # The parent first: a stopped master (PostgreSQL's postmaster, nginx's) forks no new child
    # meanwhile, so the children listed next are all there are.
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
