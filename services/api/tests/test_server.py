"""The real entry point, `python -m app`, under Uvicorn: JSON logs and a graceful SIGTERM."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from app.__main__ import build_server
from app.config import Settings
from app.main import create_app
from stack.paths import API_DIR
from stack.procs import free_port, wait_for_port
from stack.servers import Servers, api_process
from stack.testing.api import assert_problem
from stack.testing.asgi import MakeSettings


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


def test_an_unhandled_exception_is_logged_once_with_its_request_id_and_traceback(
    make_settings: MakeSettings, json_log: io.StringIO
) -> None:
    """The server `python -m app` builds (app.__main__.build_server), on a real socket, with a
    route that fails: the log is what Uvicorn and the app write for it, in our JSON format."""
    port = free_port()
    settings = make_settings(api_port=port, shutdown_grace_seconds=5)
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret-internal-detail")

    server = build_server(settings, app)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        wait_for_port(port, timeout=30)
        response = httpx.get(f"http://127.0.0.1:{port}/boom", headers={"X-Request-ID": "crash-1"})
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()
    problem = assert_problem(response, 500)
    assert "secret-internal-detail" not in response.text
    assert problem["request_id"] == "crash-1"

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    failures = [line for line in lines if "secret-internal-detail" in json.dumps(line)]
    assert len(failures) == 1, failures
    (failure,) = failures
    assert (failure["logger"], failure["level"]) == ("uvicorn.error", "ERROR")
    assert failure["request_id"] == "crash-1"
    assert failure["exception"].startswith("Traceback")
    access = [line for line in lines if line["logger"] == "app.access"]
    assert [(a["route"], a["status"], a["request_id"]) for a in access] == [
        ("/boom", 500, "crash-1")
    ]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WEB_CONCURRENCY", "2", "one worker per process"),
        ("PROMETHEUS_MULTIPROC_DIR", tempfile.gettempdir(), "multiprocess mode is not supported"),
    ],
)
def test_more_than_one_worker_is_refused_at_start(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({variable.lower(): value})
    # The real entry point exits at once, saying why, instead of serving split metrics.
    started = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=API_DIR,
        env={**os.environ, variable: value, "API_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    assert message in started.stderr
    assert Settings(_env_file=None, web_concurrency=1).web_concurrency == 1
