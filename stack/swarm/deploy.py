"""Deploy the generated stack file on the current swarm, wait until it converges, remove it.

    python3 -m stack.swarm.deploy up --file STACK_FILE [--env-file FILE] [--timeout 300]
    python3 -m stack.swarm.deploy rm [--env-file FILE] [--volumes]

`up` reads the settings (`.env`, or STACK_ENV_FILE's file) into the environment `docker stack
deploy` interpolates from (the environment wins, as with Compose), gives a one-node swarm's node
the labels the stateful services are placed by (a bigger swarm must have them already: `up`
says which are missing), deploys, and waits until every service runs all its tasks, each
healthy: Swarm counts a task with a healthcheck as running only once it is healthy. It polls
instead of `docker stack deploy --detach=false`, which waits for the services one after the
other, each for its update monitor: minutes for nothing. On failure it prints each unconverged
service's task errors and last log lines.

`rm` removes the stack and waits until its containers and networks are gone; the named volumes
stay (the data, as `make down` keeps it) unless --volumes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

from stack.envfile import read_env

DEFAULT_NAME = "fastapi-stack"
NAMESPACE = "com.docker.stack.namespace"
CONSTRAINT = re.compile(r"^node\.labels\.([\w.-]+)\s*==\s*true$")


class SwarmError(RuntimeError):
    """Said to the user as is."""


def docker(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], env=dict(env or os.environ), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise SwarmError(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result


def settings(env_file: Path | None) -> dict[str, str]:
    """The environment `docker stack deploy` needs: the settings file under the environment."""
    values = read_env(env_file) if env_file and env_file.exists() else {}
    return {**values, **os.environ}


def stack_name(env: Mapping[str, str]) -> str:
    """Compose's project name is the stack's: one name for one deployment either way."""
    return env.get("COMPOSE_PROJECT_NAME") or DEFAULT_NAME


def wanted_labels(stack_file: Path) -> set[str]:
    form = yaml.safe_load(stack_file.read_text())
    labels = set()
    for service in form["services"].values():
        for constraint in (service.get("deploy", {}).get("placement") or {}).get("constraints", []):
            if match := CONSTRAINT.match(constraint.strip()):
                labels.add(match[1])
    return labels


def label_nodes(labels: set[str]) -> None:
    """One node: it gets every label. More: each label must be on a node already."""
    if docker("info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() != "true":
        raise SwarmError(
            "this engine is no swarm manager: `docker swarm init` first (docs/swarm.md)"
        )
    nodes = docker("node", "ls", "--quiet").stdout.split()
    if len(nodes) == 1:
        options = [arg for label in sorted(labels) for arg in ("--label-add", f"{label}=true")]
        if options:
            docker("node", "update", *options, nodes[0])
        return
    present = set()
    for node in nodes:
        listed = docker("node", "inspect", "--format", "{{json .Spec.Labels}}", node).stdout
        present |= {k for k, v in (yaml.safe_load(listed) or {}).items() if v == "true"}
    if missing := sorted(labels - present):
        commands = "\n".join(f"  docker node update --label-add {m}=true <node>" for m in missing)
        raise SwarmError(f"no node carries these placement labels; choose nodes:\n{commands}")


def services(name: str) -> dict[str, tuple[int, int]]:
    """Each service of the stack: (tasks running, tasks wanted)."""
    listed = docker("stack", "services", name, "--format", "{{.Name}} {{.Replicas}}").stdout
    counts = {}
    for line in listed.splitlines():
        service, replicas = line.split(maxsplit=1)
        # A job reads "0/1 (1/1 completed)": done when every run it wants has completed.
        job = re.search(r"\((\d+)/(\d+) completed\)", replicas)
        running, wanted = (job or re.match(r"(\d+)/(\d+)", replicas)).groups()  # type: ignore[union-attr]
        counts[service] = (int(running), int(wanted))
    return counts


def updates(name: str) -> dict[str, str]:
    """Each service's rolling update state ("" when it never had one, "completed" after)."""
    ids = docker("stack", "services", name, "--quiet").stdout.split()
    if not ids:
        return {}
    template = "{{.Spec.Name}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"
    listed = docker("service", "inspect", "--format", template, *ids).stdout
    pairs = ([*line.split(), ""][:2] for line in listed.splitlines() if line.strip())
    return {service: state for service, state in pairs}


def converged(name: str) -> bool:
    """Every task of every service running (healthy), none of them still being replaced. A
    rollback means the new spec failed: that is an error, not a wait."""
    states = updates(name)
    if failed := {
        s: state for s, state in states.items() if state.startswith(("rollback", "paused"))
    }:
        raise SwarmError(
            f"{name}: the update failed and was rolled back or paused: {failed}\n{report(name)}"
        )
    if any(state == "updating" for state in states.values()):
        return False
    counts = services(name)
    return bool(counts) and all(running == wanted for running, wanted in counts.values())


def report(name: str) -> str:
    lines = []
    states = updates(name)
    for service, (running, wanted) in sorted(services(name).items()):
        if running == wanted and states.get(service) in {"", "completed", None}:
            continue
        lines.append(f"--- {service}: {running}/{wanted} tasks running")
        tasks = docker(
            "service", "ps", "--no-trunc", "--format", "{{.Name}} {{.CurrentState}} {{.Error}}",
            service, check=False,
        ).stdout  # fmt: skip
        lines += tasks.splitlines()[:6]
        logs = docker("service", "logs", "--tail", "20", service, check=False)
        lines += (logs.stdout + logs.stderr).splitlines()[-20:]
    return "\n".join(lines)


def wait(name: str, timeout: float) -> float:
    """Seconds until every service runs all its tasks; SwarmError with the report after timeout."""
    started = time.monotonic()
    while not converged(name):
        if time.monotonic() - started > timeout:
            raise SwarmError(f"{name} did not converge in {timeout:.0f} s:\n{report(name)}")
        time.sleep(1)
    return time.monotonic() - started


def up(stack_file: Path, env_file: Path | None, timeout: float, resolve_image: str) -> None:
    env = settings(env_file)
    name = stack_name(env)
    label_nodes(wanted_labels(stack_file))
    started = time.monotonic()
    docker(
        "stack", "deploy", "--detach=true", "--prune", "--with-registry-auth",
        "--resolve-image", resolve_image, "--compose-file", str(stack_file), name,
        env=env, timeout=300,
    )  # fmt: skip
    wait(name, timeout)
    print(f"swarm: stack {name} converged in {time.monotonic() - started:.0f} s")
    port = env.get("NGINX_PORT", "8080")
    print(f"  API through nginx   http://<any node running nginx>:{port}  (here: 127.0.0.1)")


def leftovers(name: str, *, volumes: bool) -> list[str]:
    label = f"label={NAMESPACE}={name}"
    found = []
    kinds = [("container", ["ps", "--all"]), ("network", ["network", "ls"])]
    kinds += [("service", ["service", "ls"]), ("config", ["config", "ls"])]
    kinds += [("volume", ["volume", "ls"])] if volumes else []
    for kind, listing in kinds:
        listed = docker(
            *listing,
            "--filter",
            label,
            "--format",
            "{{.Name}}" if kind != "container" else "{{.Names}}",
        )
        found += [f"{kind} {item}" for item in listed.stdout.split()]
    return found


def rm(env_file: Path | None, *, volumes: bool, timeout: float = 120) -> None:
    name = stack_name(settings(env_file))
    docker("stack", "rm", name)
    deadline = time.monotonic() + timeout
    # Tasks stop within their stop_grace_period; a network goes once its last task has.
    while left := leftovers(name, volumes=False):
        # A finished job's container outlives its service's removal (moby/moby#44312, open):
        # only leaving the swarm would take it. Exited, it is removed by hand (on this node).
        label = f"label={NAMESPACE}={name}"
        exited = docker("ps", "--quiet", "--filter", label, "--filter", "status=exited").stdout
        for container in exited.split():
            docker("rm", container, check=False)
        if time.monotonic() > deadline:
            raise SwarmError(f"{name} is not gone after {timeout:.0f} s: {left}")
        time.sleep(1)
    if volumes:
        label = f"label={NAMESPACE}={name}"
        for volume in docker("volume", "ls", "--quiet", "--filter", label).stdout.split():
            docker("volume", "rm", volume)
    print(f"swarm: stack {name} removed" + (" with its volumes" if volumes else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m stack.swarm.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "rm"])
    parser.add_argument("--file", type=Path, help="the generated stack file (up)")
    parser.add_argument("--env-file", type=Path, help="the settings file (.env)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to converge (up)")
    parser.add_argument("--resolve-image", choices=["always", "changed", "never"], default="always")
    parser.add_argument("--volumes", action="store_true", help="rm: the named volumes too")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            if args.file is None:
                parser.error("up needs --file")
            up(args.file, args.env_file, args.timeout, args.resolve_image)
        else:
            rm(args.env_file, volumes=args.volumes)
    except SwarmError as error:
        print(f"swarm: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
