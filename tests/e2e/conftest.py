"""The native stack, started by the tests on free loopback ports in a throwaway data folder, and
what the test_abuse_*.py modules share on it."""

from collections.abc import Iterator

import httpx
import pytest

from stack.ephemeral import EphemeralStack, throwaway_stack
from stack.testing.api import ApiUser, new_user, wait_until_serving

REPLICAS = 3


@pytest.fixture(scope="session")
def live_stack() -> Iterator[EphemeralStack]:
    # Its exit runs `make down` and fails the session if anything of the stack is left running.
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


@pytest.fixture(scope="module")
def client(live_stack: EphemeralStack) -> Iterator[httpx.Client]:
    """The API through nginx, once it serves."""
    wait_until_serving(live_stack.nginx)
    with httpx.Client(base_url=live_stack.nginx, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def user(client: httpx.Client) -> ApiUser:
    return new_user(client)


@pytest.fixture(scope="session")
def replica_pids(live_stack: EphemeralStack) -> list[str]:
    """Taken before the first abuse case (each test_abuse_*.py module uses it), compared after
    the last, in test_abuse_traces.py: session-wide, so every module's cases count."""
    return [
        live_stack.supervisorctl("pid", f"api:api-{r}")
        for r in range(1, live_stack.topology.replicas + 1)
    ]
