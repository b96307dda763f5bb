"""Abuse at the HTTP level, through nginx, against the live stack (either runner).

Path traversal, header floods, requests that are not quite HTTP, bytes only Uvicorn would
refuse, hostile Host headers: each is a 4xx problem+json (from nginx or from the API) or a plain
answer, never a 500. (The rate limit's 429 with Retry-After is test_stack.py's; the
edge's behaviour in detail, with short test timeouts, is tests/static/test_nginx_*.py's.) One of
the test_abuse_*.py modules; test_abuse_traces.py checks afterwards that none of them crashed
anything.
"""

from __future__ import annotations

import json

import httpx
import pytest

from stack.running import LiveStack
from stack.testing.api import ApiUser, assert_problem
from stack.testing.nginx import Answer, assert_raw_problem, raw_request

pytestmark = pytest.mark.usefixtures("crashes_nothing")


@pytest.mark.parametrize(
    "path",
    [
        "/items/..%2f..%2f..%2fetc%2fpasswd",
        "/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/items/1/../../../../../etc/passwd",
        "/../../../etc/passwd",
        "/items/..;/..;/etc/passwd",
        "/items/%00",
        "/items/%c0%ae%c0%ae%2fetc%2fpasswd",
        "/docs/../../../../proc/self/environ",
    ],
)
def test_path_traversal_reaches_no_file(live_stack: LiveStack, path: str) -> None:
    answer = _raw(live_stack, f"GET {path} HTTP/1.1\r\nHost: api\r\n\r\n".encode())
    assert answer.status in (400, 404, 422), answer
    assert_raw_problem(answer, answer.status)
    assert b"root:" not in answer.body
    assert b"PATH=" not in answer.body


def test_header_floods_are_refused_by_nginx(client: httpx.Client) -> None:
    one_huge = client.get("/health/live", headers={"X-Big": "a" * 20_000})
    assert_problem(one_huge, 431)
    many = client.get("/health/live", headers={f"X-Flood-{i}": "v" * 40 for i in range(1000)})
    assert_problem(many, 431)
    cookie = client.get("/health/live", headers={"Cookie": "session=" + "b" * 9000})
    assert_problem(cookie, 431)
    assert_problem(client.get("/items", params={"q": "a" * 10_000}), 414)
    # Within the limits, plenty of headers are just a request.
    fine = client.get("/health/live", headers={f"X-Ok-{i}": "v" * 40 for i in range(100)})
    assert fine.status_code == 200


def _raw(stack: LiveStack, request: bytes) -> Answer:
    """One request on its own connection, byte for byte, so nothing normalises it first."""
    return raw_request(stack.nginx_port, request)


CHUNKED_TOO = b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
# nginx answered these with its HTML 501 page; Debian's nginx 1.22 reads "\tchunked" as unknown.
TRANSFER_ENCODINGS = ["gzip, chunked", "xchunked", "chunked, identity", "identity, chunked"]
TRANSFER_ENCODINGS += ["\tchunked"]


def _te(encoding: str) -> bytes:
    head = f"POST /items HTTP/1.1\r\nHost: api\r\nTransfer-Encoding:{encoding}\r\n\r\n"
    return head.encode() + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /items HTTP/1.1\r\nHost: api\r\nNo colon here\r\n\r\n", 400),
        (b"GET /items HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /items HTTP/1.1\r\nHost: api\r\nHost: other\r\n\r\n", 400),
        # Request smuggling's usual shape: both framings at once.
        (b"POST /items HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\n" + CHUNKED_TOO, 400),
        (b"GET /items HTTP/9.9\r\nHost: api\r\n\r\n", 505),
        (b"FOO /items HTTP/1.1\r\nHost: api\r\n\r\n", 405),
        (b"QUERY /items HTTP/1.1\r\nHost: api\r\n\r\n", 405),
        (b"TRACE /items HTTP/1.1\r\nHost: api\r\n\r\n", 405),
        # Uvicorn's parser refuses raw UTF-8 in the target with a bare text/plain 400.
        (b"GET /it\xc3\xa9ms HTTP/1.1\r\nHost: api\r\n\r\n", 400),
        *[(_te(encoding), 501) for encoding in TRANSFER_ENCODINGS],
    ],
    ids=[
        "bad header line",
        "no Host",
        "two Hosts",
        "CL and TE",
        "HTTP/9.9",
        "FOO",
        "QUERY",
        "TRACE",
        "raw UTF-8 in the path",
        *[f"Transfer-Encoding:{encoding!r}" for encoding in TRANSFER_ENCODINGS],
    ],
)
def test_not_quite_http_is_a_problem_from_nginx(
    live_stack: LiveStack, request_bytes: bytes, status: int
) -> None:
    answer = _raw(live_stack, request_bytes)
    assert_raw_problem(answer, status)
    if status == 405:
        assert "GET" in answer.headers["allow"]


CONTROL_BYTES = [0x01, 0x08, 0x0B, 0x0C, 0x1B, 0x1F, 0x7F]


@pytest.mark.parametrize("byte", CONTROL_BYTES, ids=hex)
def test_a_control_byte_in_a_header_the_api_reads_is_a_400_problem(
    live_stack: LiveStack, user: ApiUser, byte: int
) -> None:
    for header in (f"Authorization: Bearer {user.token}", "Content-Type: application/json"):
        request = f"GET /items HTTP/1.1\r\nHost: api\r\n{header}{chr(byte)}[31m\r\n\r\n"
        problem = assert_raw_problem(_raw(live_stack, request.encode("latin-1")), 400)
        assert problem["detail"] == "A header value holds a control character."


def test_a_header_the_api_does_not_read_cannot_break_a_request(
    live_stack: LiveStack,
) -> None:
    """`User-Agent: curl\x1b[31m` got Uvicorn's text/plain 400: replicas no longer see it."""
    request = b"GET /health/live HTTP/1.1\r\nHost: api\r\nUser-Agent: curl\x1b[31m\r\n\r\n"
    answer = _raw(live_stack, request)
    assert answer.status == 200, answer
    assert json.loads(answer.body)["status"] == "ok"


@pytest.mark.parametrize("host", ["evil.example", 'a"b', "127.0.0.1:8001"])
def test_redirects_are_relative_whatever_the_host(live_stack: LiveStack, host: str) -> None:
    """Starlette's trailing-slash redirect went out as http://<replica>/items or echoed Host."""
    answer = _raw(live_stack, f"GET /items/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    if answer.status == 404:  # the API may stop redirecting; then it is its problem
        assert_raw_problem(answer, 404)
        return
    if answer.status == 400 and '"' in host:
        # Newer nginx (the Compose image's 1.27) refuses a quote in Host itself; Debian 12's
        # 1.22 passes it on. Either way no Location can echo it.
        assert_raw_problem(answer, 400)
        assert "location" not in answer.headers
        return
    assert answer.status in (301, 307, 308), answer
    assert answer.headers["location"] == "/items"
