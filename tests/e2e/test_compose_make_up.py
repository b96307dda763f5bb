"""What only the Compose path can show: `make up` with no engine and with a broken variant of the
stack, what `make up` built and started and in which order, the users, read-only roots, published
ports and networks the file promises. Replicas coming and going and `make loadtest` as containers
are test_compose_replicas.py's.

The session's Compose stack (tests/e2e/conftest.py) serves the tests that take `live_stack`; the
broken variants are projects of their own, cleaned up by each test.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from stack import engine
from stack.compose import ComposeStack
from stack.paths import API_DIR, REPO_ROOT
from stack.running import LiveStack
from stack.standins import mirror

pytestmark = pytest.mark.compose_only(reason="what docker-compose.yml promises, on an engine")

PUBLISHABLE = {"nginx", "prometheus", "alertmanager", "grafana"}
# PostgreSQL's SSLRequest: a server answers one byte, N or S.
SSL_REQUEST = bytes.fromhex("0000000804d2162f")


def _timestamp(text: str) -> datetime:
    """Docker's RFC 3339 times carry nanoseconds; datetime takes microseconds."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", text).replace("Z", "+00:00"))


# --- make up, refused or failing ---------------------------------------------------------------


def test_up_without_an_engine_fails_at_once_and_starts_nothing(
    docker_engine: engine.Engine, tmp_path: Path
) -> None:
    """The checkout's Makefile, run from a folder that has no engine state of the project's (in
    the checkout, make would find the project's running engine), with DOCKER_HOST on a socket
    nobody answers."""
    before = _all_containers(docker_engine)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_", "ST"))}
    env |= {
        "DOCKER_HOST": f"unix://{tmp_path}/nobody.sock",
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "STACK": "compose",
    }
    started = time.monotonic()
    refused = subprocess.run(
        ["make", "-f", str(REPO_ROOT / "Makefile"), "up"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    assert refused.returncode != 0
    assert "No Docker engine answers. Start Docker, or run 'make engine'" in refused.stderr
    assert took < 15, took
    # Nothing made: no settings file, no container anywhere.
    assert not (tmp_path / ".env").exists()
    assert _all_containers(docker_engine) == before


def _all_containers(docker: engine.Engine) -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "--all", "--quiet"], env={**os.environ, **docker.env},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return sorted(listed.stdout.split())


FAILING_HEALTHCHECK = {
    "test": ["CMD-SHELL", "echo unhealthy-on-purpose; exit 1"],
    "interval": "1s",
    "timeout": "2s",
    "retries": 2,
    "start_period": "0s",
}
BROKEN_IMAGE = "fastapi-stack-test/broken-api"
BROKEN_DOCKERFILE = "FROM python:3.11.13-slim-bookworm\nRUN echo broken-on-purpose && exit 3\n"
# Variant → (its changes to docker-compose.yml, what `make up` must print about it).
BROKEN: dict[str, tuple[Callable[[Path], dict[str, Any]], list[str]]] = {
    "failed build": (
        lambda folder: {"api": {"build": {"context": str(REPO_ROOT), "dockerfile": str(folder)}}},
        ["broken-on-purpose"],
    ),
    "unhealthy service": (
        lambda _: {"redis": {"healthcheck": FAILING_HEALTHCHECK}},
        ["--- redis: its last log lines", "healthcheck (exit 1): unhealthy-on-purpose"],
    ),
    "failed migration": (
        lambda _: {"migrate": {"environment": {"POSTGRES_PASSWORD": "wrong-on-purpose"}}},
        ["--- migrate: its last log lines", "password authentication failed"],
    ),
}


@pytest.mark.parametrize("variant", BROKEN)
def test_a_broken_stack_fails_up_with_the_failing_service_s_logs(
    docker_engine: engine.Engine, tmp_path: Path, variant: str
) -> None:
    dockerfile = tmp_path / "Dockerfile.broken"
    dockerfile.write_text(BROKEN_DOCKERFILE)
    changes, expected = BROKEN[variant]
    stack = ComposeStack.prepare(
        tmp_path,
        docker_engine.env,
        replicas=1,
        override=changes(dockerfile),
        # A tag of its own, so no broken build can replace the real API image's.
        settings={"API_IMAGE": BROKEN_IMAGE},
    )
    try:
        started = time.monotonic()
        failed = stack.make("up", "UP_TIMEOUT=120", timeout=600)
        took = time.monotonic() - started
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output[-3000:]
        for text in expected:
            assert text in output, output[-5000:]
        print(f"\n{variant}: make up failed after {took:.0f} s")
    finally:
        cleaned = stack.make("clean", timeout=300)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert stack.leftovers() == []
        stack.docker("image", "rm", "--force", f"{BROKEN_IMAGE}:0.1.0")


# --- what make up built and started ------------------------------------------------------------


def test_up_built_the_api_image_from_its_dockerfile_and_printed_the_urls(
    live_stack: LiveStack,
) -> None:
    stack = ComposeStack.of(live_stack)
    settings = stack.settings
    for line in (
        f"API through nginx   http://127.0.0.1:{settings['NGINX_PORT']}",
        f"Prometheus          http://127.0.0.1:{settings['PROMETHEUS_PORT']}/targets",
        f"Alertmanager        http://127.0.0.1:{settings['ALERTMANAGER_PORT']}",
    ):
        assert line in stack.up_output, stack.up_output[-3000:]
    images = {stack.inspect(container)["Image"] for container in stack.containers("api")}
    assert len(images) == 1
    [image] = json.loads(stack.docker("image", "inspect", images.pop()))
    # Built by `make up` for this project. Not its tag: every project of this checkout builds
    # fastapi-stack/api:0.1.0, and Compose labels the image with the project, so a later build by
    # another project on the same engine moves the tag off this one.
    labels = image["Config"]["Labels"]
    assert labels["com.docker.compose.project"] == stack.project
    assert labels["com.docker.compose.service"] == "api"
    # What services/api/Dockerfile says its image is.
    dockerfile = (API_DIR / "Dockerfile").read_text()
    command = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert command
    assert image["Config"]["Cmd"] == json.loads(command[1])
    assert image["Config"]["User"] == "10001:10001"
    assert "APP_ENV=production" in image["Config"]["Env"]
    assert image["Config"]["Healthcheck"]["Test"][0] == "CMD"
    print(f"\nAPI image {image['Id'][7:19]}: {image['Size'] / 1e6:.0f} MB")


def test_migrate_ran_once_before_any_replica_started(live_stack: LiveStack) -> None:
    stack = ComposeStack.of(live_stack)
    [migrate] = stack.containers("migrate")
    state = stack.inspect(migrate)
    assert (state["State"]["Status"], state["State"]["ExitCode"]) == ("exited", 0)
    assert state["RestartCount"] == 0
    # Every later `up` (make scale, make loadtest) runs migrate again, with nothing to upgrade.
    # Alembic's first line of each run ("Context impl ...") ends the one before: the first run's
    # last line dates it, whatever ran before this test.
    logged = subprocess.run(
        ["docker", "logs", "--timestamps", migrate], env=stack.env, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = sorted((logged.stdout + logged.stderr).splitlines())
    starts = [n for n, line in enumerate(lines) if "Context impl" in line]
    assert starts, lines[:5]
    first_run = lines[: starts[1]] if len(starts) > 1 else lines
    assert any("Running upgrade" in line for line in first_run), first_run
    finished = _timestamp(first_run[-1].split()[0])
    for container in stack.containers("api"):
        # Each replica's first line (either stream), whatever restarts came after it.
        logged = subprocess.run(
            ["docker", "logs", "--timestamps", container], env=stack.env, capture_output=True,
            text=True, timeout=60, check=True,
        )  # fmt: skip
        lines = (logged.stdout + logged.stderr).splitlines()
        assert lines, container
        assert min(_timestamp(line.split()[0]) for line in lines) > finished


def test_every_container_runs_as_its_user_on_a_read_only_root(live_stack: LiveStack) -> None:
    stack = ComposeStack.of(live_stack)
    config = json.loads(stack.compose("config", "--format", "json").stdout)["services"]
    checked = set()
    for entry in _ps(stack):
        if entry["State"] != "running":
            continue
        service, container = entry["Service"], entry["ID"]
        details = stack.inspect(container)
        assert details["HostConfig"]["ReadonlyRootfs"] is True, service
        main_pid = details["State"]["Pid"]
        processes = [
            line.split(None, 2) for line in stack.docker("top", container, "-eo", "pid,uid,comm")
            .splitlines()[1:]
        ]  # fmt: skip
        assert processes, service
        wanted = str(config[service].get("user", "")).split(":", 1)[0]
        for pid, uid, command in processes:
            if wanted:
                assert uid == wanted, (service, command, uid)
            elif not (service == "nginx" and int(pid) == main_pid):
                # nginx's master alone stays root, to start its workers (tests/static/
                # test_secrets.py says why each image needs no `user:`).
                assert uid != "0", (service, command)
        checked.add(service)
    assert {"nginx", "api", "postgres", "redis", "prometheus", "alertmanager"} <= checked
    wrote = stack.compose("exec", "-T", "api", "sh", "-c", "touch /probe", check=False)
    assert wrote.returncode != 0
    assert "Read-only file system" in wrote.stderr


def _ps(stack: ComposeStack) -> list[dict[str, Any]]:
    listed = stack.compose("ps", "--all", "--format", "json").stdout
    return [json.loads(line) for line in listed.splitlines() if line.strip()]


def test_postgres_and_redis_answer_on_no_published_port(live_stack: LiveStack) -> None:
    stack = ComposeStack.of(live_stack)
    published = {
        (entry["Service"], p["URL"], p["PublishedPort"])
        for entry in _ps(stack)
        for p in entry["Publishers"] or []
        if p["PublishedPort"]
    }
    assert {service for service, _, _ in published} <= PUBLISHABLE
    assert {"nginx", "prometheus", "alertmanager"} <= {service for service, _, _ in published}
    # The test stack keeps every one on loopback (NGINX_BIND_ADDRESS).
    assert {address for _, address, _ in published} == {"127.0.0.1"}
    # Spoken to as PostgreSQL and as Redis, no published port answers as either; the same probes
    # get their answers from the real servers on the private network.
    assert _probe(stack.datastore("postgres"), SSL_REQUEST) in (b"N", b"S")
    assert _probe(stack.datastore("redis"), b"PING\r\n").startswith(b"-NOAUTH")
    for _, address, port in published:
        assert _probe((address, port), SSL_REQUEST) not in (b"N", b"S"), port
        assert not _probe((address, port), b"PING\r\n").startswith((b"-NOAUTH", b"+PONG")), port


def _probe(address: tuple[str, int], payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(payload)
        conn.settimeout(3)
        try:
            return conn.recv(64)
        except (TimeoutError, ConnectionResetError):
            return b""


CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 80), timeout=5)"


def test_the_private_network_has_no_route_out(live_stack: LiveStack) -> None:
    """The Debian mirror, from an API replica (private network only): unreachable; from nginx (on
    the public network too): it answers. (Like any bridge network's, the private network still
    reaches this machine's own addresses; `internal` stops what would leave it.)"""
    stack = ComposeStack.of(live_stack)
    host = urlsplit(mirror()).hostname
    assert host
    outside = str(socket.getaddrinfo(host, 80, socket.AF_INET)[0][4][0])
    tried = stack.compose("exec", "-T", "api", "python", "-c", CONNECT, outside, check=False)
    assert tried.returncode != 0, tried.stdout
    assert re.search(r"timed out|unreachable", tried.stderr), tried.stderr
    url = f"http://{outside}/"
    fetched = stack.compose(
        "exec", "-T", "nginx", "wget", "-q", "-T", "5", "-O", "-", url, check=False
    )
    # Any answer will do (a mirror may well say 404 to a bare address): it was reached.
    assert fetched.returncode == 0 or "server returned error" in fetched.stderr, fetched.stderr
