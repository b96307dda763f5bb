"""The pytest plugin every suite loads (pyproject's addopts: -p stack.testing.plugin).

It marks each test by what it really starts, read from the fixtures it uses, so `-m` selects
honestly: `servers` (its own PostgreSQL, Redis or another server process), `stack` (a whole stack),
`engine` (a Docker engine). Tests that start a server without a fixture carry the mark by hand.
"""

from __future__ import annotations

import pytest

# Fixture name → the mark every test that uses it (directly or through other fixtures) gets.
FIXTURE_MARKS = {
    "servers": "servers",
    "live_stack": "stack",
    "chaos_stack": "stack",
    "compose_stack": "engine",
    "docker_engine": "engine",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, mark in FIXTURE_MARKS.items():
            if fixture in used:
                item.add_marker(mark)
