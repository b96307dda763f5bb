"""What a GET client may see when a replica is killed under it, and how a test tells that apart
from a real failure.

nginx re-sends a GET to another replica when the killed one fails it before answering: a refused
connect, a reset, a timeout (`proxy_next_upstream`). It cannot once it has passed the answer's head
on. Uvicorn writes a response's head and its body in two writes; a SIGKILL that lands between them
leaves nginx with a head it already sent to the client and a body that never comes. nginx logs
"upstream prematurely closed connection while reading upstream" and closes the client's connection,
the only honest thing left: no proxy can retry an answer it has committed to. A replica's event
loop writes one response at a time (no middleware of the API hands a response to another task), so
one kill can cut at most one answer this way, and each cut one has its line in nginx's error log.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

# nginx's words when the upstream closed after the head was passed on ("...while reading response
# header from upstream" is the retried case, before anything reached the client).
CUT_MID_RESPONSE = "upstream prematurely closed connection while reading upstream"


def cut_mid_response(error_log: str) -> int:
    """How many answers nginx's error log (the lines written meanwhile) says were cut off."""
    return error_log.count(CUT_MID_RESPONSE)


def wrk(url: str, seconds: int) -> subprocess.Popen[str]:
    """wrk with GETs on 16 connections; it waits as long as the edge promises an answer within
    (10 s), not wrk's own 2 s."""
    return subprocess.Popen(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "10s", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@dataclass(frozen=True)
class WrkRun:
    """wrk's summary: its requests, its non-2xx/3xx answers and its socket errors by kind."""

    output: str
    requests: int
    not_ok: int
    connect: int
    read: int
    write: int
    timeout: int

    @classmethod
    def parse(cls, output: str) -> WrkRun:
        requests = re.search(r"(\d+) requests in", output)
        assert requests, output
        not_ok = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        errors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
        )
        connect, read, write, timeout = (int(n) for n in errors.groups()) if errors else (0,) * 4
        return cls(
            output, int(requests[1]), int(not_ok[1]) if not_ok else 0, connect, read, write, timeout
        )

    def assert_no_get_failed(self, *, kills: int, error_log: str) -> None:
        """Every answer a 2xx and no socket error, but for answers the kills cut mid-response: at
        most one per kill, each one nginx logged as such (`error_log`: its lines from the run)."""
        assert self.requests > 100, self.output
        assert self.not_ok == 0, self.output
        assert (self.connect, self.write, self.timeout) == (0, 0, 0), self.output
        cut = cut_mid_response(error_log)
        assert self.read <= min(kills, cut), (self.output, error_log[-2000:])
