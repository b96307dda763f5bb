"""The whole stack, started by the tests, once per runner: natively (supervisord, free loopback
ports, a throwaway data folder) and under Compose (a project of its own on a Docker engine,
brought up with `make up`). Each test gets a `LiveStack` (stack/running.py) and does not care
which.

`runner` is session-scoped, so pytest runs every test of one runner, then takes that stack down
before the other's starts. The Compose half needs an engine: `docker_engine` uses the one that
answers, or starts the project's own when this session is root (and stops it at the end). Where
neither can be had, the Compose tests are skipped and `-ra` prints why.

Also what the test_abuse_*.py modules share on either stack: a client through nginx, a user, and
the check after each module that its abuse crashed nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from stack import engine
from stack.compose import throwaway_compose_stack
from stack.ephemeral import throwaway_stack
from stack.running import LiveStack
from stack.testing.api import ApiUser, new_user, wait_until_serving

RUNNERS = ("native", "compose")
REPLICAS = 3


@pytest.fixture(scope="session", params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "compose":
        request.getfixturevalue("docker_engine")
    return name


@pytest.fixture(scope="session")
def live_stack(runner: str, request: pytest.FixtureRequest) -> Iterator[LiveStack]:
    # Each exit takes its stack down the way a user does and fails the session if anything of it
    # is left (a process or a port; a container, network or volume).
    if runner == "native":
        with throwaway_stack(
            "native-stack-",
            REPLICAS,
            # Fast scrapes so the checks see series within seconds.
            NATIVE_SCRAPE_INTERVAL="1s",
            # All test traffic comes from 127.0.0.1; the rate-limit test runs its own nginx.
            NGINX_RATE_LIMIT="100000r/s",
            SHUTDOWN_GRACE_SECONDS="5",
        ) as stack:
            yield stack
        return
    docker: engine.Engine = request.getfixturevalue("docker_engine")
    with throwaway_compose_stack(
        "e2e",
        docker.env,
        replicas=REPLICAS,
        # The same two changes as natively, by a second Compose file over the committed one.
        scrape_interval="1s",
        # Everything the tests send reaches nginx from one address, the engine's gateway.
        nginx_rate="100000r/s",
        SHUTDOWN_GRACE_SECONDS="5",
    ) as compose_stack:
        yield compose_stack


@pytest.fixture(scope="module")
def client(live_stack: LiveStack) -> Iterator[httpx.Client]:
    """The API through nginx, once it serves."""
    wait_until_serving(live_stack.nginx)
    with httpx.Client(base_url=live_stack.nginx, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def user(client: httpx.Client) -> ApiUser:
    return new_user(client)


@pytest.fixture(scope="module")
def crashes_nothing(live_stack: LiveStack, client: httpx.Client) -> Iterator[None]:
    """After each test_abuse_*.py module (its teardown), whatever ran before it: the same replica
    processes as before its first case, still serving, and not one line a replica logged
    meanwhile that is an unhandled exception or a request Uvicorn could not parse (it answers
    those in text/plain, without a request id)."""
    replicas = range(1, live_stack.replicas + 1)
    before = live_stack.replica_ids()
    seen = {r: len(live_stack.log(f"api-{r}").splitlines()) for r in replicas}
    yield
    assert live_stack.replica_ids() == before
    assert client.get("/health/live").status_code == 200
    for replica, lines in seen.items():
        errors = [
            line
            for line in live_stack.log(f"api-{replica}").splitlines()[lines:]
            if '"level":"ERROR"' in line or "Invalid HTTP request" in line
        ]
        assert errors == [], errors[:3]
