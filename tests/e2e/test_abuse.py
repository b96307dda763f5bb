"""Bad input and abuse, through nginx, against the live native stack.

Every case must come back as a 4xx problem+json, from nginx or from the API, and never reach a
500: malformed and mistyped bodies, bodies too large or nested too deep, strings and numbers out
of range, Unicode the database refuses or must keep verbatim, SQL-shaped text, path traversal,
header floods and requests that are not quite HTTP. (The rate limit's 429 with Retry-After is
test_native_stack.py's.)
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stack.ephemeral import EphemeralStack
from stack.testing.api import ApiUser, assert_problem, new_item, new_user, wait_until_serving

JSON = {"Content-Type": "application/json"}
ITEM = {"name": "x", "price": 1}
DEEP = b"[" * 2000 + b"]" * 2000 + b"}"


@pytest.fixture(scope="module")
def client(live_stack: EphemeralStack) -> Iterator[httpx.Client]:
    wait_until_serving(live_stack.nginx)
    with httpx.Client(base_url=live_stack.nginx, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def user(client: httpx.Client) -> ApiUser:
    return new_user(client)


@pytest.fixture(scope="module", autouse=True)
def replica_pids(live_stack: EphemeralStack) -> list[str]:
    """Taken before the first case, compared after the last."""
    return [
        live_stack.supervisorctl("pid", f"api:api-{r}")
        for r in range(1, live_stack.topology.replicas + 1)
    ]


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
    client: httpx.Client, user: ApiUser, live_stack: EphemeralStack, text: str
) -> None:
    item = new_item(client, user, name=text[:200], description=text)
    assert (item["name"], item["description"]) == (text[:200], text)
    # Read back from the database (a list page has no cache) and from every replica.
    listed = client.get("/items", params={"cursor": item["id"] - 1, "limit": 1}).json()
    assert listed["data"][0]["description"] == text
    for port in live_stack.topology.api_ports:
        got = httpx.get(f"http://127.0.0.1:{port}/items/{item['id']}", timeout=10)
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
def test_path_traversal_reaches_no_file(live_stack: EphemeralStack, path: str) -> None:
    # Raw, so neither httpx nor anything else normalises the path before nginx sees it.
    status, headers, body = _raw(live_stack, f"GET {path} HTTP/1.1\r\nHost: api\r\n\r\n".encode())
    assert status in (400, 404, 422), (status, body[:300])
    assert headers["content-type"] == "application/problem+json", headers
    assert b"root:" not in body
    assert b"PATH=" not in body


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


def _raw(stack: EphemeralStack, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, byte for byte; returns status, headers and body."""
    port = stack.topology.ports["nginx"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if lengths and len(rest) >= lengths[0]:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    return int(lines[0].split()[1]), headers, body


CHUNKED_TOO = b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"


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
    ],
)
def test_not_quite_http_is_a_problem_from_nginx(
    live_stack: EphemeralStack, request_bytes: bytes, status: int
) -> None:
    got, headers, body = _raw(live_stack, request_bytes)
    assert got == status, body[:300]
    assert headers["content-type"] == "application/problem+json", headers
    assert json.loads(body)["status"] == status
    if status == 405:
        assert "GET" in headers["allow"]


def test_the_abuse_crashed_nothing(
    live_stack: EphemeralStack, client: httpx.Client, replica_pids: list[str]
) -> None:
    """Same replica processes as before the abuse, and not one unhandled exception logged."""
    assert [
        live_stack.supervisorctl("pid", f"api:api-{r}")
        for r in range(1, live_stack.topology.replicas + 1)
    ] == replica_pids
    assert client.get("/health/live").status_code == 200
    for replica in range(1, live_stack.topology.replicas + 1):
        errors = [
            line
            for line in live_stack.log(f"api-{replica}").splitlines()
            if '"level":"ERROR"' in line
        ]
        assert errors == [], errors[:3]
