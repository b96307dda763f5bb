"""REQUEST_BODY_TIMEOUT_SECONDS under the real server (app.__main__.build_server on a socket):
a body trickled slower than its deadline gets a 408 problem and the connection is closed."""

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from app.__main__ import build_server
from app.main import create_app
from stack.procs import free_port, wait_for_port
from stack.testing.api import PROBLEM
from stack.testing.asgi import MakeSettings

DEADLINE = 1.0
HEADER = (
    b"POST /items HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    b"X-Request-ID: slow-body-1\r\nContent-Length: %d\r\n\r\n"
)


@pytest.fixture(scope="module")
def port(make_settings: MakeSettings) -> Iterator[int]:
    port = free_port()
    settings = make_settings(
        api_port=port, shutdown_grace_seconds=5, request_body_timeout_seconds=DEADLINE
    )
    server = build_server(settings, create_app(settings))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        wait_for_port(port, timeout=30)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _trickle(port: int, body: bytes, interval: float) -> tuple[bytes, float, bool]:
    """Send the header, then the body a byte per `interval` until the server answers.

    Returns what came back, when the answer began (seconds after the header) and whether the
    server closed the connection afterwards."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(HEADER % len(body))
        started = time.monotonic()
        conn.settimeout(interval)
        received, answered_at = b"", None
        for byte in body:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                chunk = None
            if chunk == b"":
                return received, answered_at or 0.0, True
            if chunk:
                received += chunk
                answered_at = answered_at or time.monotonic() - started
                if b"\r\n\r\n" in received:
                    break
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                break
        conn.settimeout(3)
        closed = False
        try:
            while chunk := conn.recv(65536):
                received += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
        return received, answered_at or time.monotonic() - started, closed


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_a_body_slower_than_its_deadline_gets_a_408_problem_and_a_closed_connection(
    port: int,
) -> None:
    raw, answered_at, closed = _trickle(port, b"{" + b" " * 99, interval=0.2)
    status, headers, body = _parse(raw)
    assert status == 408, raw[:300]
    assert DEADLINE <= answered_at < DEADLINE + 1.5, answered_at
    assert headers["content-type"] == PROBLEM
    assert headers["connection"] == "close"
    problem = json.loads(body[: int(headers["content-length"])])
    assert problem["type"].endswith("/request-timeout")
    assert problem["title"] == "Request Timeout"
    assert problem["detail"] == "The request body did not arrive within 1 s."
    assert problem["request_id"] == headers["x-request-id"] == "slow-body-1"
    assert closed


def test_a_body_complete_within_its_deadline_is_served(port: int) -> None:
    """Trickled too, but done in time: the request reaches the route (401, no token)."""
    raw, _, _ = _trickle(port, b"{" + b" " * 2 + b"}", interval=0.1)
    status, _, _ = _parse(raw)
    assert status == 401, raw[:300]
