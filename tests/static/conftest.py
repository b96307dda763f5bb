"""Fixtures the static tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from stack.testing.compose_file import COMPOSE_FILE, resolved_model
from stack.testing.nginx import EchoUpstream, RunningNginx, run_nginx


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[RunningNginx, EchoUpstream]]:
    """The real nginx serving HTTPS (and plain HTTP) in front of one echo replica, for a module."""
    with EchoUpstream() as upstream, run_nginx([upstream.address], https="serve") as nginx:
        yield nginx, upstream


@pytest.fixture(scope="session")
def raw() -> dict[str, Any]:
    """docker-compose.yml as written (variables unresolved)."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="session")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it with every required setting given."""
    return resolved_model(tmp_path_factory.mktemp("compose"))
