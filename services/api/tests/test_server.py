"""The real entry point, `python -m app`, under Uvicorn: JSON logs and a graceful SIGTERM."""

import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from stack.servers import Servers, api_process


@pytest.fixture
def server(servers: Servers) -> Iterator[tuple[subprocess.Popen[str], int]]:
    with api_process(servers, "proc-test", grace_seconds=10) as running:
        yield running


def test_sigterm_lets_an_in_flight_request_finish(
    server: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = server
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=5) as response:
        assert response.status == 200

    body = json.dumps({"email": f"inflight-{port}@example.com", "name": "In Flight"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # Headers and half the body: the request is in flight when SIGTERM arrives.
        conn.sendall(
            b"POST /users HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nX-Request-ID: inflight-1\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None, "exited while a request was in flight"
        conn.sendall(body[10:])
        reply = conn.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 201"), reply
    assert "x-request-id: inflight-1" in reply.lower()

    # Uvicorn re-raises SIGTERM once drained, so the exit status says "terminated by SIGTERM".
    assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    assert process.stderr is not None
    lines = [
        json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")
    ]
    messages = [line["message"] for line in lines]
    assert "stopped" in messages  # the lifespan closed the pools after draining
    access = [line for line in lines if line["logger"] == "app.access"]
    assert [(a["route"], a["status"], a["request_id"]) for a in access] == [
        ("/users", 201, "inflight-1")
    ]
    assert all(line["replica"] == "proc-test" for line in lines)
