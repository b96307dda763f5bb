"""Bad input through nginx, against the live stack (either runner): bodies and parameters.

Every case must come back as a 4xx problem+json and never reach a 500: malformed and mistyped
bodies, bodies too large or nested too deep, strings and numbers out of range, Unicode the
database refuses or must keep verbatim, SQL-shaped text and parameters. One of the
test_abuse_*.py modules; test_abuse_traces.py checks afterwards that none of them crashed
anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stack.running import LiveStack
from stack.testing.api import ApiUser, assert_problem, new_item

pytestmark = pytest.mark.usefixtures("crashes_nothing")

JSON = {"Content-Type": "application/json"}
ITEM = {"name": "x", "price": 1}
DEEP = b"[" * 2000 + b"]" * 2000 + b"}"


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
