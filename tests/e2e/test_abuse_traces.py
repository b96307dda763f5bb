"""What abuse leaves behind, on the live stack (either runner): no token from a query string in
any log, a log folder for the stack's user only, and the access log JSON line for line with
nginx's errors in their own file. (That no abuse crashed a replica or logged an unhandled
exception is checked after each test_abuse_*.py module: conftest's `crashes_nothing`.)
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from stack.ephemeral import EphemeralStack
from stack.running import LiveStack
from stack.testing.api import ApiUser, assert_problem, new_item
from stack.testing.nginx import raw_request

pytestmark = pytest.mark.usefixtures("crashes_nothing")

XCHUNKED = b"POST /items HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: xchunked\r\n\r\n"


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


def test_the_access_log_stays_json_and_errors_have_their_own_file(
    live_stack: LiveStack, client: httpx.Client
) -> None:
    """nginx's own refusals (a 400, a 413, a 501) log their error lines apart, so nginx.log stays
    JSON line for line, whatever ran before."""
    refused = {
        400: raw_request(live_stack.nginx_port, b"GET /items HTTP/1.1\r\n\r\n").status,
        413: client.post("/items", content=b"x" * 2**21).status_code,
        501: raw_request(live_stack.nginx_port, XCHUNKED).status,
    }
    assert refused == {status: status for status in refused}
    time.sleep(1.5)  # nginx flushes its buffered access log within a second
    lines = live_stack.log("nginx").splitlines()
    statuses = {json.loads(line)["status"] for line in lines}
    assert set(refused) <= statuses
    assert "client intended to send too large body" in live_stack.log("nginx.error")
