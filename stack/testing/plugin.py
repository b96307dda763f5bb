"""The pytest plugin every suite loads (pyproject's addopts: -p stack.testing.plugin).

It marks each test by what it really starts, read from the fixtures it uses, so `-m` selects
honestly: `servers` (its own PostgreSQL, Redis or another server process), `stack` (a whole stack),
`engine` (a Docker engine: the `docker_engine` fixture, or the Compose value of the `runner`
parameter). Tests that start a server without a fixture carry the mark by hand.

It also holds the one `docker_engine` fixture the Compose and Swarm tests share: the engine that
answers, or the project's own when this session is root (stopped again at the end).

End-to-end tests run once per runner (tests/e2e/conftest.py's `runner`: native, compose); one
marked `native_only(reason)` or `compose_only(reason)` is skipped for the other runner, with the
reason, which `-ra` prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stack import engine

# Fixture name → the mark every test that uses it (directly or through other fixtures) gets.
FIXTURE_MARKS = {
    "servers": "servers",
    "live_stack": "stack",
    "backup_stack": "stack",
    "alerting_stack": "stack",
    "chaos_stack": "stack",
    "docker_engine": "engine",
}
# Marker → the one runner its tests run on.
RUNNER_ONLY = {"native_only": "native", "compose_only": "compose"}


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[engine.Engine]:
    if os.geteuid() != 0 and engine.status().startswith("none"):
        pytest.skip(
            "no Docker engine answers and this session is not root, so it cannot start the "
            "project's own (start Docker, or run the tests as root)"
        )
    started = engine.ensure_engine(standins=True)
    yield started
    if started.started:
        started.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, mark in FIXTURE_MARKS.items():
            if fixture in used:
                item.add_marker(mark)
        callspec = getattr(item, "callspec", None)
        runner = callspec.params.get("runner") if callspec is not None else None
        if runner == "compose":
            item.add_marker("engine")
        for name, only in RUNNER_ONLY.items():
            marker = item.get_closest_marker(name)
            if marker is None or runner in (None, only):
                continue
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"{only} runner only: {reason}".rstrip(": ")))
