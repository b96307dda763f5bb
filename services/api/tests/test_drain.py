"""SIGTERM drains before it stops: the real `python -m app`, a real keep-alive connection.

nginx keeps idle connections to every replica; closing one under a request nginx is writing
loses that request, and nginx cannot retry a POST. So on SIGTERM the replica refuses new
connections at once (nginx retries those elsewhere, safely), keeps serving its open ones with
`Connection: close`, and only then shuts down (app/__main__.py).
"""

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from stack.servers import Servers, api_process


@pytest.fixture
def replica(servers: Servers) -> Iterator[tuple[subprocess.Popen[str], int]]:
    # Drain for at most 4 s (app.__main__.DRAIN_SECONDS).
    with api_process(servers, "drain-test", grace_seconds=10) as running:
        yield running


def _get(conn: socket.socket, path: str) -> str:
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: api\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        reply += chunk
    return reply.decode()


def test_sigterm_refuses_new_connections_and_closes_open_ones_after_a_response(
    replica: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = replica
    with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
        before = _get(kept, "/health/live")
        assert before.startswith("HTTP/1.1 200")
        assert "connection: close" not in before.lower()

        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # New connections are refused at once: nginx moves on to another replica.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert process.poll() is None, "stopped while a keep-alive connection was open"

        # The open connection is still served, and told to close.
        during = _get(kept, "/health/live")
        assert during.startswith("HTTP/1.1 200"), during
        assert "connection: close" in during.lower()
        assert kept.recv(1) == b"", "the replica kept the connection open"

    # Nothing open any more: the drain ends early instead of waiting out its 4 s.
    start = time.monotonic()
    assert process.wait(timeout=10) in (0, -signal.SIGTERM)
    assert time.monotonic() - start < 3
    assert process.stderr is not None
    lines = [
        json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")
    ]
    events = {line["message"]: line for line in lines if line["logger"] == "app.server"}
    assert events["draining"]["connections"] == 1
    assert events["drained"]["connections_left"] == 0
    assert "stopped" in [line["message"] for line in lines]


def test_an_idle_connection_is_closed_when_the_drain_ends(
    replica: tuple[subprocess.Popen[str], int],
) -> None:
    """A client that never sends again cannot hold the replica up past the drain period."""
    process, port = replica
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        assert _get(idle, "/health/live").startswith("HTTP/1.1 200")
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        idle.settimeout(15)
        assert idle.recv(1) == b""
        closed_after = time.monotonic() - start
    assert 3.5 < closed_after < 8, closed_after
    assert process.wait(timeout=15) in (0, -signal.SIGTERM)


def test_drain_min_seconds_keeps_refusing_with_no_connection_open(servers: Servers) -> None:
    """Swarm's floor: a replica with nothing open still refuses (it does not vanish) until
    DRAIN_MIN_SECONDS have passed, so a proxy holding its old address gets a refusal it retries
    elsewhere, not a connect timeout to an address with no container behind it."""
    floor = 2.0
    with api_process(
        servers, "drain-floor", grace_seconds=10, environment={"DRAIN_MIN_SECONDS": str(floor)}
    ) as (process, port):
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refusals = 0
        while time.monotonic() - start < floor - 0.3:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            assert process.poll() is None, "the replica stopped inside its drain floor"
            refusals += 1
            time.sleep(0.2)
        assert refusals >= 5
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
        assert time.monotonic() - start >= floor
        assert process.stderr is not None
        lines = [json.loads(x) for x in process.stderr.read().splitlines() if x.startswith("{")]
    drained = next(line for line in lines if line["message"] == "drained")
    assert drained["seconds"] >= floor
    assert drained["connections_left"] == 0
