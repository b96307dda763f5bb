"""HTTP/1.1 byte for byte, for the tests of what nginx does with requests no client library
would send: a request written to a socket exactly as given (inside TLS if asked), the response
read off it, and the one error shape (problem+json) checked on that response.

    answer = raw_request(port, b"GET /it\\xc3\\xa9ms HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
    assert_raw_problem(answer, 400)
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROBLEM = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


@dataclass(frozen=True)
class Answer:
    """One response read off a socket byte for byte, or `status` 0 when none came."""

    status: int
    headers: dict[str, str]
    body: bytes


def tls_context(ca: Path) -> ssl.SSLContext:
    """A client context that trusts `ca` alone and checks the host name, as curl --cacert does."""
    return ssl.create_default_context(cafile=str(ca))


def raw_request(
    port: int, data: bytes, *, timeout: float = 10, tls: ssl.SSLContext | None = None
) -> Answer:
    """`data` on a connection of its own, exactly as given (inside TLS with `tls`); the response
    nginx sends, if any."""
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        if tls is not None:
            conn = stack.enter_context(tls.wrap_socket(conn, server_hostname="localhost"))
        conn.sendall(data)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                received = _without_interim(received + chunk)
                head, found, rest = received.partition(b"\r\n\r\n")
                length = _content_length(head) if found else None
                if length is not None and len(rest) >= length:
                    break
    return parse_answer(received)


def _without_interim(received: bytes) -> bytes:
    """Drops complete 1xx responses (100 Continue) ahead of the final one."""
    while re.match(rb"HTTP/1\.[01] 1\d\d ", received) and b"\r\n\r\n" in received:
        received = received.partition(b"\r\n\r\n")[2]
    return received


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


def parse_answer(received: bytes) -> Answer:
    if not received:
        return Answer(0, {}, b"")
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    return Answer(int(lines[0].split()[1]), headers, body)


def assert_raw_problem(answer: Answer, status: int) -> dict[str, Any]:
    """The one error shape (stack.testing.api.assert_problem) on a raw answer."""
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == PROBLEM, answer.headers
    document: dict[str, Any] = json.loads(answer.body)
    assert document.keys() >= PROBLEM_KEYS, document
    assert document["status"] == status
    assert document["type"].startswith("https://")
    assert document["title"]
    assert document["detail"]
    assert document["request_id"] == answer.headers["x-request-id"]
    return document
