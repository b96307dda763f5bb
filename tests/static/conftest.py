"""Fixtures the static tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stack.testing.nginx import EchoUpstream, RunningNginx, run_nginx


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[RunningNginx, EchoUpstream]]:
    """The real nginx serving HTTPS (and plain HTTP) in front of one echo replica, for a module."""
    with EchoUpstream() as upstream, run_nginx([upstream.address], https="serve") as nginx:
        yield nginx, upstream
