"""Bad input and abuse, through nginx, against the live stack (native and Compose).

Every case must come back as a 4xx problem+json, from nginx or from the API, and never reach a
500: malformed and mistyped bodies, bodies too large or nested too deep, strings and numbers out
of range, Unicode the database refuses or must keep verbatim, SQL-shaped text, path traversal,
header floods and requests that are not quite HTTP, bytes only Uvicorn would refuse, hostile
Host headers, tokens in query strings, slow and stalled clients. (The rate limit's 429 with
Retry-After is test_stack.py's; the edge's behaviour in detail, with short test timeouts,
is tests/static/test_nginx_*.py's.)
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from stack.ephemeral import EphemeralStack
from stack.running import LiveStack
from stack.testing.api import ApiUser, assert_problem, new_item, new_user, wait_until_serving
from stack.testing.nginx import Answer, assert_raw_problem, parse_answer, raw_request

JSON = {"Content-Type": "application/json"}
ITEM = {"name": "x", "price": 1}
DEEP = b"[" * 2000 + b"]" * 2000 + b"}"


@pytest.fixture(scope="module")
def client(live_stack: LiveStack) -> Iterator[httpx.Client]:
    wait_until_serving(live_stack.nginx)
    with httpx.Client(base_url=live_stack.nginx, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def user(client: httpx.Client) -> ApiUser:
    return new_user(client)


@pytest.fixture(scope="module", autouse=True)
def replica_pids(live_stack: LiveStack) -> list[str]:
    """Taken before the first case, compared after the last."""
    return live_stack.replica_ids()


BODIES: list[tuple[str, bytes, dict[str, str], int]] = [
    ("malformed JSON", b'{"name": "x", ', JSON, 422),
    ("trailing garbage", b'{"name": "x", "price": 1} x', JSON, 422),
    ("JSON array, not an object", b'[{"name": "x", "price": 1}]', JSON, 422),
    ("empty body", b"", JSON, 422),
    ("text/plain", b'{"name": "x", "price": 1}', {"Content-Type": "text/plain"}, 415),
    ("no Content-Type", b'{"name": "x", "price": 1}', {}, 415),
    ("form-encoded", b"name=x&price=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("XML", b"<item><name>x</name></item>", {"Content-Type": "application/xml"}, 415),
    ("invalid UTF-8", b'{"name": "\xff\xfe", "price": 1}', JSON, 400),
    ("nesting 100 000 deep", b"[" * 100_000 + b"]" * 100_000, JSON, 400),
    (
        "nesting 2 000 deep in a field",
        b'{"name": "x", "price": 1, "description": ' + DEEP,
        JSON,
        400,
    ),
    ("a 5 000-digit integer", b'{"name": "x", "price": ' + b"9" * 5000 + b"}", JSON, 400),
    ("price 1e400 (infinity)", b'{"name": "x", "price": 1e400}', JSON, 422),
    ("price NaN", b'{"name": "x", "price": NaN}', JSON, 422),
    ("price above the column", b'{"name": "x", "price": 1e13}', JSON, 422),
    ("price negative", b'{"name": "x", "price": -0.01}', JSON, 422),
    ("price with 3 decimals", b'{"name": "x", "price": 0.001}', JSON, 422),
    ("name of 201 characters", json.dumps({"name": "n" * 201, "price": 1}).encode(), JSON, 422),
    (
        "description of 900 000",
        json.dumps({**ITEM, "description": "d" * 900_000}).encode(),
        JSON,
        422,
    ),
    ("NUL in a string", b'{"name": "a\\u0000b", "price": 1}', JSON, 422),
    ("lone surrogate", b'{"name": "a\\ud800b", "price": 1}', JSON, 422),
    ("unknown field", b'{"name": "x", "price": 1, "owner_id": 1}', JSON, 422),
    ("2 MiB body", b"x" * (2 * 1024 * 1024), JSON, 413),
]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [case[1:] for case in BODIES],
    ids=[case[0] for case in BODIES],
)
def test_bad_bodies_are_4xx_problems(
    client: httpx.Client, user: ApiUser, body: bytes, headers: dict[str, str], status: int
) -> None:
    response = client.post("/items", content=body, headers={**headers, **user.auth})
    problem = assert_problem(response, status)
    if status == 422:
        assert problem["errors"], problem


def test_nul_is_refused_on_every_text_field(client: httpx.Client, user: ApiUser) -> None:
    """PostgreSQL cannot store U+0000: a 422 naming the field, on create and on update."""
    item = new_item(client, user)
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/users", {"email": "nul@example.com", "name": "a\x00"}, "name"),
        ("POST", "/items", {"name": "ok", "price": 1, "description": "\x00"}, "description"),
        ("PATCH", f"/items/{item['id']}", {"name": "\x00"}, "name"),
    ]
    for method, path, body, field in cases:
        problem = assert_problem(client.request(method, path, json=body, headers=user.auth), 422)
        assert [(e["field"], e["type"]) for e in problem["errors"]] == [(field, "string_nul")]


def test_a_chunked_body_over_the_limit_is_413(client: httpx.Client, user: ApiUser) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    response = client.post("/items", content=chunks(), headers={**JSON, **user.auth})
    assert_problem(response, 413)


UNICODE = [
    "\u202eRTL override\u202c and \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "emoji \U0001f600 family \U0001f468\u200d\U0001f469\u200d\U0001f467 flag \U0001f1fa\U0001f1f8",
    "combining e\u0301\u0301\u0301 and zero-width\u200b\u200c\u200d joiners",
    "\ufeffBOM first, astral \U00010348 and \U0001d11e",
    "CJK \u4e2d\u6587 / Hangul \ud55c\uad6d\uc5b4 / Devanagari \u0939\u093f\u0928\u0926\u0940",
    "control \x01\x1f\x7f bytes, tab\tand newline\nkept",
]
SQL_SHAPED = [
    "'; DROP TABLE items; --",
    "Robert'); DROP TABLE users;--",
    '" OR "1"="1',
    "1' OR '1'='1' /*",
    "x'; SELECT pg_sleep(10); --",
    "$$; COPY items TO PROGRAM 'id'; $$",
    "\\'; TRUNCATE users CASCADE; --",
]


@pytest.mark.parametrize("text", UNICODE + SQL_SHAPED)
def test_text_is_stored_and_returned_verbatim(
    client: httpx.Client, user: ApiUser, live_stack: LiveStack, text: str
) -> None:
    item = new_item(client, user, name=text[:200], description=text)
    assert (item["name"], item["description"]) == (text[:200], text)
    # Read back from the database (a list page has no cache) and from every replica.
    listed = client.get("/items", params={"cursor": item["id"] - 1, "limit": 1}).json()
    assert listed["data"][0]["description"] == text
    for got in live_stack.every_replica(f"/items/{item['id']}"):
        assert got.json()["description"] == text


def test_sql_shaped_text_left_the_tables_alone(client: httpx.Client, user: ApiUser) -> None:
    assert client.get(f"/users/{user.id}").status_code == 200
    assert client.get("/items", params={"limit": 1}).status_code == 200


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/items/9223372036854775808", {}, 422),  # 2**63: past BIGINT
        ("/items/99999999999999999999999999", {}, 422),
        ("/items/-1", {}, 422),
        ("/items/1e3", {}, 422),
        ("/items", {"limit": str(10**30)}, 422),
        ("/items", {"limit": "0"}, 422),
        ("/items", {"cursor": "-1"}, 422),
        ("/items", {"owner_id": "1 OR 1=1"}, 422),
        ("/items", {"cursor": "0; DROP TABLE items"}, 422),
        ("/users/1%20OR%201=1", {}, 422),
    ],
)
def test_out_of_range_and_sql_shaped_parameters(
    client: httpx.Client, path: str, params: dict[str, str], status: int
) -> None:
    assert_problem(client.get(path, params=params), status)


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


def test_a_token_in_a_query_string_reaches_no_log(
    live_stack: LiveStack, client: httpx.Client, user: ApiUser
) -> None:
    item = new_item(client, user)
    query = {"token": user.token}
    assert_problem(client.patch(f"/items/{item['id']}", params=query, json={"name": "y"}), 401)
    assert_problem(client.get("/metrics", params=query), 404)
    assert_problem(client.post("/items", params=query, content=b"x" * 2**21), 413)
    time.sleep(1.5)  # nginx flushes its buffered access log within a second
    logs = live_stack.logs()
    assert "nginx" in logs
    for name, text in logs.items():
        # nginx's error lines quote the request line of a request that failed in nginx (the 413
        # here), and nginx cannot be told otherwise: that log is as private as the rest.
        if name != "nginx.error":
            assert user.token not in text, name


@pytest.mark.native_only(
    reason="under Compose the logs are the engine's (docker logs), readable by who may run docker"
)
def test_the_log_folder_is_for_the_stack_s_user_only(live_stack: LiveStack) -> None:
    assert isinstance(live_stack, EphemeralStack)
    logs = live_stack.data_dir / "stack" / "logs"
    for log in logs.iterdir():
        assert log.stat().st_mode & 0o027 == 0, (log.name, oct(log.stat().st_mode))
    assert logs.stat().st_mode & 0o027 == 0, oct(logs.stat().st_mode)


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
        refused = _raw(live_stack, b"GET /health/live HTTP/1.1\r\nHost: api\r\n\r\n")
        problem = assert_raw_problem(refused, 429)
        assert refused.headers["retry-after"] == "1"
        assert "address" in problem["detail"]
    deadline = time.monotonic() + 5
    while _raw(live_stack, b"GET /health/live HTTP/1.1\r\nHost: api\r\n\r\n").status != 200:
        assert time.monotonic() < deadline, "the slots were not given back"
        time.sleep(0.1)


def test_the_access_log_stays_json_and_errors_have_their_own_file(
    live_stack: LiveStack,
) -> None:
    """After the refusals above (429s, 400s, 413s, 501s), nginx.log is JSON line for line."""
    time.sleep(1.5)
    lines = live_stack.log("nginx").splitlines()
    statuses = {json.loads(line)["status"] for line in lines}
    assert {400, 413, 429, 501} <= statuses
    assert "client intended to send too large body" in live_stack.log("nginx.error")


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


def test_the_abuse_crashed_nothing(
    live_stack: LiveStack, client: httpx.Client, replica_pids: list[str]
) -> None:
    """Same replica processes as before the abuse, not one unhandled exception logged, and not
    one request Uvicorn could not parse (it answers those in text/plain, without a request id)."""
    assert live_stack.replica_ids() == replica_pids
    assert client.get("/health/live").status_code == 200
    for replica in range(1, live_stack.replicas + 1):
        errors = [
            line
            for line in live_stack.log(f"api-{replica}").splitlines()
            if '"level":"ERROR"' in line or "Invalid HTTP request" in line
        ]
        assert errors == [], errors[:3]
