"""The chaos suite's own native stack, and where its measurements go.

These runs take minutes, so `make test` leaves them out and `make chaos` (CI runs both) sets
CHAOS=1. The stack is separate from tests/e2e's: a fault here must not leave state behind for
another suite, and `make chaos` must work on its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.ephemeral import EphemeralStack, throwaway_stack

from .results import Results

REPLICAS = 3
# Git-ignored (see .gitignore); docs/reliability.md's table is copied from results.md.
RESULTS_DIR = Path(__file__).resolve().parent / "results"

if not os.environ.get("CHAOS"):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def results() -> Results:
    return Results()


@pytest.fixture(scope="session")
def chaos_stack() -> Iterator[EphemeralStack]:
    with throwaway_stack(
        "chaos-stack-",
        REPLICAS,
        # Scrapes and rule evaluations every second: Prometheus sees a replica go down and an
        # alert go pending within the few seconds a restart takes.
        NATIVE_SCRAPE_INTERVAL="1s",
        # The load comes from one address; the rate limit is not what is under test here.
        NGINX_RATE_LIMIT="100000r/s",
    ) as stack:
        yield stack
