"""A one-node swarm on the harness's engine and the stack deployed on it the way a user does it:
`make stack-deploy` with a settings file of its own (COMPOSE_PROJECT_NAME is the stack's name,
free loopback ports, the e2e suite's faster scrapes and higher nginx rate through a second Compose
file: stack/compose.py prepares it). The exit runs `make stack-rm VOLUMES=1`, asserts nothing of
the stack is left, and leaves the swarm if this session created it (with the docker_gwbridge
network Swarm made and leaves behind).

These tests run in a pytest session of their own (`make test` runs `pytest tests/swarm` after the
rest): in one session with the Compose end-to-end tests, the Compose stack would still be up on the
same engine while the swarm is made and left, and leaving a swarm has cut a Compose network's DNS.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import engine
from stack.compose import ComposeStack
from stack.envfile import read_env
from stack.paths import REPO_ROOT
from stack.swarm.live import REPLICAS, SwarmStack, docker
from stack.testing.api import wait_until_serving


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    runners = {getattr(getattr(i, "callspec", None), "params", {}).get("runner") for i in items}
    if "compose" not in runners:
        return
    alone = pytest.mark.skip(reason="runs in a session of its own: pytest tests/swarm")
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(alone)


@pytest.fixture(scope="session")
def swarm(docker_engine: engine.Engine) -> Iterator[dict[str, str]]:
    """The engine as a swarm manager: made a one-node swarm on loopback unless it is one."""
    env = {**os.environ, **docker_engine.env}
    state = docker(env, "info", "--format", "{{.Swarm.LocalNodeState}}").strip()
    if state not in {"inactive", "active"}:
        pytest.fail(f"the engine's swarm is {state}: neither a swarm nor free to make one")
    # Only what Swarm makes: other stacks' networks come and go on a shared engine.
    swarm_networks = {"ingress", "docker_gwbridge"}
    networks = set(docker(env, "network", "ls", "--format", "{{.Name}}").split()) & swarm_networks
    created = state == "inactive"
    if created:
        docker(env, "swarm", "init", "--advertise-addr", "127.0.0.1")
    yield env
    if created:
        docker(env, "swarm", "leave", "--force")
        if "docker_gwbridge" not in networks:
            docker(env, "network", "rm", "docker_gwbridge")
        left = set(docker(env, "network", "ls", "--format", "{{.Name}}").split())
        assert left & swarm_networks == networks


def _make(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def swarm_stack(
    swarm: dict[str, str], docker_engine: engine.Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SwarmStack]:
    prepared = ComposeStack.prepare(
        tmp_path_factory.mktemp("swarm"),
        docker_engine.env,
        replicas=REPLICAS,
        scrape_interval="1s",
        # Everything the tests send reaches nginx from one address.
        nginx_rate="100000r/s",
        # The least the swarm form's drain floor (DRAIN_MIN_SECONDS, 6 s) allows, plus a second.
        settings={"SHUTDOWN_GRACE_SECONDS": "8"},
    )
    # prepare() keeps none of the caller's DOCKER_* variables: a user's own engine (whose
    # Engine.env is empty) is reached through them.
    reach = {k: v for k, v in os.environ.items() if k in {"DOCKER_HOST", "DOCKER_CONFIG"}}
    env = {**prepared.env, **reach, **docker_engine.env}
    # The engine's stand-ins only (no Grafana there), and no registry to resolve names in.
    options = ["SWARM_GENERATE_FLAGS=--only-present", "SWARM_RESOLVE_IMAGE=never"]
    started = time.monotonic()
    deployed = _make(env, "stack-deploy", *options, timeout=600)
    converged_in = time.monotonic() - started
    stack = SwarmStack(prepared.project, env, read_env(prepared.env_file), converged_in)
    try:
        assert deployed.returncode == 0, deployed.stdout[-5000:] + deployed.stderr[-5000:]
        # Converged means every task healthy; nginx finds the api tasks at its next lookup of
        # `api` (every 5 s), and answers 502 until then on a fresh deploy (docs/swarm.md).
        wait_until_serving(stack.nginx)
        stack.timings["serving after converged"] = time.monotonic() - started - converged_in
        yield stack
    finally:
        removed = _make(env, "stack-rm", "VOLUMES=1", timeout=300)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert stack.leftovers() == []
        print(f"\nswarm timings: converge {converged_in:.0f} s, {stack.timings}")
