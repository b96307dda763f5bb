"""The native stack, started by the tests on free loopback ports in a throwaway data folder."""

from collections.abc import Iterator

import pytest

from stack.ephemeral import EphemeralStack, throwaway_stack

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
