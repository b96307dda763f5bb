"""What the abuse of the test_abuse_*.py modules left behind, on the live stack (either runner).

No token from a query string in any log, the access log JSON line for line with nginx's errors
in their own file, and the same replica processes as before the first abuse case with not one
unhandled exception logged. pytest takes a folder's modules by name, so this one runs after the
others; on its own, the access log check finds none of their refusals.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from stack.ephemeral import EphemeralStack
from stack.running import LiveStack
from stack.testing.api import ApiUser, assert_problem, new_item

pytestmark = pytest.mark.usefixtures("replica_pids")


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
    live_stack: LiveStack,
) -> None:
    """After the other abuse modules' refusals (429s, 400s, 413s, 501s), nginx.log is JSON
    line for line."""
    time.sleep(1.5)
    lines = live_stack.log("nginx").splitlines()
    statuses = {json.loads(line)["status"] for line in lines}
    assert {400, 413, 429, 501} <= statuses
    assert "client intended to send too large body" in live_stack.log("nginx.error")


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
