"""Slow and stalled clients, through nginx, against the live stack (either runner).

Requests in progress from one address are limited (a 429 problem, slots given back after), a
stalled header is cut off and a stalled or trickling body gets the API's 408 problem, each at
10 s. One of the test_abuse_*.py modules; test_abuse_traces.py checks afterwards that none of
them crashed anything.
"""

from __future__ import annotations

import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from stack.running import LiveStack
from stack.testing.nginx import assert_raw_problem, parse_answer, raw_request

pytestmark = pytest.mark.usefixtures("crashes_nothing")


SLOW_BODY = b"POST /items HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
SLOW_BODY += b"Content-Length: 100\r\n\r\n{"


def test_requests_in_progress_from_one_address_are_limited(live_stack: LiveStack) -> None:
    """Bodies that never finish hold a replica connection each; one address gets conn_limit."""
    port = live_stack.nginx_port
    with contextlib.ExitStack() as held:
        for _ in range(live_stack.nginx_conn_limit()):
            conn = held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            conn.sendall(SLOW_BODY)
        time.sleep(0.5)
        refused = raw_request(port, b"GET /health/live HTTP/1.1\r\nHost: api\r\n\r\n")
        problem = assert_raw_problem(refused, 429)
        assert refused.headers["retry-after"] == "1"
        assert "address" in problem["detail"]
    deadline = time.monotonic() + 5
    while raw_request(port, b"GET /health/live HTTP/1.1\r\nHost: api\r\n\r\n").status != 200:
        assert time.monotonic() < deadline, "the slots were not given back"
        time.sleep(0.1)


def _wait_for_close(conn: socket.socket) -> tuple[float, bytes]:
    started, received = time.monotonic(), b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            received += chunk
    return time.monotonic() - started, received


def test_a_stalled_client_is_cut_off_after_10_s(live_stack: LiveStack) -> None:
    """A stalled header: nginx resets at 10 s and sends nothing (its timeouts never answer,
    nginx/nginx#489). A stalled body: the API's 10 s whole-body deadline answers 408, always
    before nginx's per-read body timer (15 s) could reset it."""
    port = live_stack.nginx_port
    stalled = [SLOW_BODY, b"POST /items HTTP/1.1\r\nHost: api\r\nContent-Le"]
    with contextlib.ExitStack() as held:
        conns = [
            held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=15))
            for _ in stalled
        ]
        for conn, sent in zip(conns, stalled, strict=True):
            conn.sendall(sent)
        with ThreadPoolExecutor(len(conns)) as pool:
            (body_took, body_answer), (header_took, header_answer) = pool.map(
                _wait_for_close, conns
            )
    assert 9 < body_took < 13, body_took
    assert_raw_problem(parse_answer(body_answer), 408)
    assert 9 < header_took < 13, header_took
    assert header_answer == b""


def test_a_body_slower_than_its_deadline_gets_a_408_problem(live_stack: LiveStack) -> None:
    """One byte a second never trips nginx's per-read timeout; the API's deadline must."""
    with socket.create_connection(("127.0.0.1", live_stack.nginx_port)) as conn:
        conn.sendall(SLOW_BODY)
        conn.settimeout(1)
        started, received = time.monotonic(), b""
        while time.monotonic() - started < 14 and b"\r\n\r\n" not in received:
            with contextlib.suppress(TimeoutError):
                received += conn.recv(65536)
            with contextlib.suppress(OSError):
                conn.sendall(b" ")
        with contextlib.suppress(OSError):
            conn.settimeout(2)
            received += conn.recv(65536)
    assert_raw_problem(parse_answer(received), 408)
