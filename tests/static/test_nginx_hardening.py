"""The edge against hostile clients: what reaches a replica, what is logged, what is limited.

The real nginx binary runs the stack's nginx.conf in front of stand-in replicas. Where a
production value would make a test slow (10 s timeouts) the test's copy of nginx.conf gets a
short one, and stack.testing.nginx.run_nginx asserts the production value was there to replace.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import Settings
from app.main import create_app
from stack.paths import NGINX_DIR
from stack.testing.nginx import Answer, EchoUpstream, assert_raw_problem, parse_answer, run_nginx

CONTROL_BYTES = [0x01, 0x08, 0x0B, 0x0C, 0x1B, 0x1F, 0x7F]
# What nginx itself puts on every proxied request.
NGINX_SETS = {"host", "x-request-id", "x-real-ip", "x-forwarded-for", "x-forwarded-proto"}
NGINX_SETS |= {"x-forwarded-host"}


def _request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _seen(answer: Answer) -> dict[str, Any]:
    assert answer.status == 200, answer
    seen: dict[str, Any] = json.loads(answer.body)
    return seen


# --- bytes Uvicorn would answer with a bare text/plain 400 ----------------------------------


@pytest.mark.parametrize("byte", CONTROL_BYTES, ids=hex)
@pytest.mark.parametrize("header", ["Authorization", "Content-Type", "If-Match"])
def test_a_control_byte_in_a_forwarded_header_is_a_400_problem(header: str, byte: int) -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        value = f"Bearer a{chr(byte)}[31mb"
        answer = nginx.raw(_request("GET", "/items", f"{header}: {value}"))
        problem = assert_raw_problem(answer, 400)
        assert problem["detail"] == "A header value holds a control character."
        # Tab is legal in a field value, for nginx and for Uvicorn alike.
        assert nginx.raw(_request("GET", "/items", f"{header}: a\tb")).status == 200
        assert len(upstream.requests) == 1


def test_headers_the_api_does_not_read_never_reach_it() -> None:
    """Such as `User-Agent: curl\\x1b[31m`: a replica gets only the headers listed in nginx.conf."""
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        seen = _seen(
            nginx.raw(
                _request(
                    "POST",
                    "/items",
                    "User-Agent: curl\x1b[31m",
                    "Cookie: session=x",
                    "X-Custom: \x01",
                    "Range: bytes=0-1",
                    "Upgrade: websocket",
                    "Authorization: Bearer t",
                    "Content-Type: application/json",
                    'If-Match: "1"',
                    body=b"{}",
                )
            )
        )
    forwarded = NGINX_SETS | {"authorization", "content-type", "if-match", "content-length"}
    assert set(seen["headers"]) == forwarded
    assert (seen["headers"]["authorization"], seen["headers"]["if-match"]) == ("Bearer t", '"1"')


def _forwarded_client_headers() -> set[str]:
    text = (NGINX_DIR / "nginx.conf").read_text()
    pairs = dict(
        (name.lower(), value)
        for name, value in (
            line.split()[1:3] for line in text.splitlines() if line.strip().startswith("proxy_set")
        )
    )
    # A header whose value is the client's own ($http_x, $content_type), not nginx's.
    return {name for name, value in pairs.items() if value.startswith(("$http_", "$content_type"))}


def test_the_forwarded_headers_are_the_ones_the_api_reads() -> None:
    """The OpenAPI document names every header the API reads; nginx must forward each (and a
    request body's Content-Type, and the bearer token's Authorization), and nothing else."""
    document = create_app(Settings(app_env="test")).openapi()
    read = {"content-type"}
    for path in document["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "header":
                    read.add(parameter["name"].lower())
    schemes = document.get("components", {}).get("securitySchemes", {}).values()
    read |= {"authorization" for scheme in schemes if scheme.get("scheme") == "bearer"}
    assert _forwarded_client_headers() == read


@pytest.mark.parametrize(
    "target", ["/it\xc3\xa9ms", "/items?q=\xc3\xa9", "/items/\xff", "/items?x=\x80"]
)
def test_raw_bytes_outside_ascii_in_the_target_are_a_400_problem(target: str) -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        request = f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode("latin-1")
        problem = assert_raw_problem(nginx.raw(request), 400)
        assert "percent-encode" in problem["detail"]
        # The path when it is safe to write into JSON, else "/".
        path = target.split("?", maxsplit=1)[0]
        assert problem["instance"] == (path if path.isascii() else "/")
        assert _seen(nginx.raw(_request("GET", "/it%C3%A9ms?q=%C3%A9")))["path"] == (
            "/it%C3%A9ms?q=%C3%A9"
        )
        assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "encoding", ["gzip, chunked", "xchunked", "chunked, identity", "identity, chunked", "\tchunked"]
)
def test_unknown_transfer_encodings_are_problems(encoding: str) -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        head = f"POST /items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:{encoding}\r\n\r\n"
        answer = nginx.raw(head.encode() + b"0\r\n\r\n")
    if encoding == "\tchunked" and answer.status == 200:
        # nginx >= 1.23 (Compose's) skips a tab before a value as it does a space: plain chunked.
        assert upstream.requests[0]["body_bytes"] == 0
        return
    assert_raw_problem(answer, 501)
    assert upstream.requests == []


# --- Host and redirects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "upstream_sees"),
    [
        ("evil.example", "localhost"),
        ('a"b', "localhost"),
        ("127.0.0.1:8001", "127.0.0.1:8001"),
        ("LOCALHOST:8080", "LOCALHOST:8080"),
        ("localhost.evil.example", "localhost"),
        ("[::1]:8080", "[::1]:8080"),
    ],
)
def test_only_a_host_naming_this_stack_reaches_the_api(host: str, upstream_sees: str) -> None:
    with (
        EchoUpstream(location="http://{host}/items") as upstream,
        run_nginx([upstream.address]) as nginx,
    ):
        answer = nginx.raw(f"GET /items/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert answer.status == 307
        assert answer.headers["location"] == "/items"
        seen = upstream.requests[0]["headers"]
        assert (seen["host"], seen["x-forwarded-host"]) == (upstream_sees, upstream_sees)


@pytest.mark.parametrize(
    ("location", "relative"),
    [
        ("http://127.0.0.1:8001/items", "/items"),
        ("https://evil.example/items?cursor=5", "/items?cursor=5"),
        ("http://localhost:8080", "/"),
        ("/items", "/items"),
    ],
)
def test_a_replicas_absolute_location_goes_out_as_a_path(location: str, relative: str) -> None:
    with EchoUpstream(location=location) as upstream, run_nginx([upstream.address]) as nginx:
        assert nginx.raw(_request("GET", "/items/")).headers["location"] == relative


# --- logs --------------------------------------------------------------------------------------


def test_query_strings_never_reach_the_access_log() -> None:
    token = "planted-" + "x" * 24
    requests = {
        f"/items/3?token={token}": 200,
        f"/metrics?access_token={token}": 404,
        f"/items?token={token}&cursor=1": 200,
    }
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        for path, status in requests.items():
            assert nginx.raw(_request("PATCH", path, body=b"{}")).status == status
        refused = _request("GET", f"/items?token={token}", "Authorization: \x01")
        assert nginx.raw(refused).status == 400
        lines = nginx.log_lines(at_least=4)
        access, errors = nginx.access_log.read_text(), nginx.error_log.read_text()
    assert token not in access
    assert token not in errors
    assert sorted(line["path"] for line in lines) == ["/items", "/items", "/items/3", "/metrics"]
    assert all("?" not in line["path"] for line in lines)


def test_every_access_log_line_is_json_after_a_burst_of_refusals() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address], rate="1r/m") as nginx:
        statuses = [nginx.raw(_request("GET", "/items")).status for _ in range(130)]
        statuses += [nginx.raw(b"GET /x HTTP/1.1\r\nbroken\r\n\r\n").status for _ in range(10)]
        statuses += [nginx.raw(_request("POST", "/items", body=b"x" * 1_100_000)).status]
        lines = nginx.log_lines(at_least=len(statuses))
        errors = nginx.error_log.read_text()
    assert statuses.count(429) >= 29
    assert {400, 413} <= set(statuses)
    assert sorted(line["status"] for line in lines) == sorted(statuses)
    # Refusals leave their status in the access log, not a line each in the error log.
    assert "limiting requests" not in errors
    assert "client sent invalid header line" not in errors


# --- limits and timeouts -----------------------------------------------------------------------


def test_the_production_values_the_short_test_values_stand_in_for() -> None:
    text = re.sub(r"#.*", "", (NGINX_DIR / "nginx.conf").read_text())
    directives = dict(re.findall(r"^\s*(\w+)\s+([^;{]*);", text, flags=re.MULTILINE))
    assert directives["client_header_timeout"] == "10s"
    # Above the API's whole-body deadline (REQUEST_BODY_TIMEOUT_SECONDS), so that one answers.
    assert directives["client_body_timeout"] == "15s"
    assert directives["proxy_read_timeout"] == "10s"
    assert directives["reset_timedout_connection"] == "on"
    assert directives["proxy_request_buffering"] == "off"
    assert directives["limit_conn_status"] == directives["limit_req_status"] == "429"
    # Refusals are counted in the access log, not written one by one into the error log.
    assert directives["limit_conn_log_level"] == directives["limit_req_log_level"] == "info"
    assert re.search(r"^error_log stderr warn;", text, flags=re.MULTILINE)


@contextlib.contextmanager
def _connections(port: int, count: int, data: bytes) -> Iterator[list[socket.socket]]:
    with contextlib.ExitStack() as stack:
        conns = [
            stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            for _ in range(count)
        ]
        for conn in conns:
            conn.sendall(data)
        time.sleep(0.3)  # nginx has read what each sent
        yield conns


SLOW_BODY = b"POST /items HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabcd"


def test_requests_in_progress_per_address_are_limited() -> None:
    with (
        EchoUpstream() as upstream,
        run_nginx([upstream.address], conn_limit=3) as nginx,
    ):
        with _connections(nginx.public_port, 3, SLOW_BODY):
            problem = assert_raw_problem(nginx.raw(_request("GET", "/items")), 429)
            assert "retry" in problem["detail"].lower()
        # A slot is freed when nginx finalises the request, which it logs: wait for the three
        # closed requests' lines (and the 429's) rather than racing nginx to the next request.
        assert len(nginx.log_lines(at_least=4)) >= 4
        assert nginx.raw(_request("GET", "/items")).status == 200
        # nginx counts a connection only once its header is complete: unfinished headers are
        # bounded by client_header_timeout and worker_connections, not by limit_conn.
        with _connections(nginx.public_port, 10, b"GET /items HTTP/1.1\r\nHost"):
            assert nginx.raw(_request("GET", "/items")).status == 200


def _wait_for_close(conn: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the peer closes or resets the connection, and whatever it sent first."""
    started, received = time.monotonic(), b""
    conn.settimeout(limit)
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            received += chunk
    return time.monotonic() - started, received


@pytest.mark.parametrize(
    ("directive", "value", "sent"),
    [
        ("client_body_timeout", "15s", SLOW_BODY),
        ("client_header_timeout", "10s", b"POST /items HTTP/1.1\r\nHost: a\r\nContent-Le"),
    ],
)
def test_a_stalled_client_is_cut_off_without_an_answer(
    directive: str, value: str, sent: bytes
) -> None:
    """What nginx really does on its timeouts: it logs 408 and resets the connection; no 408
    response is ever sent (nginx/nginx#489), whatever error_page says."""
    short = {f"{directive} {value};": f"{directive} 1s;"}
    with EchoUpstream() as upstream, run_nginx([upstream.address], replace=short) as nginx:
        with socket.create_connection(("127.0.0.1", nginx.public_port)) as conn:
            conn.sendall(sent)
            took, received = _wait_for_close(conn, limit=5)
        assert 0.9 < took < 3, took
        assert received == b""
        assert [line["status"] for line in nginx.log_lines()] == [408]


def test_a_slow_body_streams_to_the_replica_and_its_408_reaches_the_client() -> None:
    """The whole-body deadline is the API's: nginx hands it a body that has not fully arrived
    as it comes, and passes the replica's early 408 problem to the client still sending."""
    with (
        EchoUpstream(body_deadline=1.0) as upstream,
        run_nginx([upstream.address]) as nginx,
        socket.create_connection(("127.0.0.1", nginx.public_port), timeout=10) as conn,
    ):
        started = time.monotonic()
        conn.sendall(b"POST /items HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\na")
        received = b""
        conn.setblocking(False)
        while time.monotonic() - started < 5 and b"\r\n\r\n" not in received:
            with contextlib.suppress(BlockingIOError):
                received += conn.recv(65536)
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                conn.send(b"b")
            time.sleep(0.2)
        took = time.monotonic() - started
        conn.setblocking(True)
        with contextlib.suppress(OSError):
            received += conn.recv(65536)
    answer = parse_answer(received)
    assert answer.status == 408, received[:300]
    assert 0.9 < took < 2.5, took
    # The replica had the header while the client was still sending: nothing was buffered.
    assert upstream.requests[0]["header_at"] - started < 0.5
    assert upstream.requests[0]["body_complete"] is False
