"""One Compose service → its Swarm form: ports in mode host, read-only file mounts as configs,
one-shots folded into their dependent, and deploy's restart, update, rollback and placement
(stack/swarm/generate.py assembles the stack file from these; docs/swarm.md says why for each rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stack.paths import REPO_ROOT

# Swarm refuses these (schema) or ignores them with a warning; the stack file says neither.
DROPPED_KEYS = frozenset(
    {
        "build", "cgroup_parent", "container_name", "depends_on", "devices", "dns_opt",
        "domainname", "external_links", "ipc", "links", "mac_address", "network_mode", "pid",
        "privileged", "profiles", "pull_policy", "restart", "security_opt", "shm_size",
        "userns_mode", "tmpfs",
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
# A service's variables for its swarm form only (docker-compose.yml's api: the drain floor).
SWARM_ENVIRONMENT = "x-swarm-environment"


class SwarmFormError(ValueError):
    """The Compose file has something this generator cannot turn into Swarm's form."""


def expand(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """${VAR} and ${VAR:-default} as Compose reads them (enough for an image name or a path)."""

    def value(match: re.Match[str]) -> str:
        return environ.get(match[1]) or (match[2] or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", value, text)


def _private(path: Path) -> bool:
    """A key, or any file its owner keeps from others: a Docker secret, never a config (configs
    are stored unencrypted and shown by `docker config inspect`)."""
    return path.suffix == ".key" or not path.stat().st_mode & stat.S_IROTH


def _named_by_settings(service: str, volume: Mapping[str, Any]) -> dict[str, Any]:
    """A mount whose source is a ${VARIABLE} (nginx's certificate, key and rendered HTTPS entry):
    Compose reads it as a named volume, uninterpolated; it is a file of the deploying machine,
    named by the settings `make stack-config` exported (stack/tls compose-env)."""
    path = Path(expand(str(volume["source"])))
    path = path if path.is_absolute() else REPO_ROOT / path
    if not path.exists():
        raise SwarmFormError(
            f"{service}: {volume['source']} names {path}, which does not exist "
            "(make stack-config renders it)"
        )
    if volume.get("read_only") is not True:
        raise SwarmFormError(f"{service}: a writable mount of {path} has no Swarm form")
    return {"type": "bind", "source": str(path), "target": volume["target"], "read_only": True}


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
    service: str,
    volumes: list[Any],
    configs: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, configs, secrets) of one service. Read-only files, the checkout's read-only
    folders and the files the settings name are the deploying machine's: they become configs, or
    secrets where private. Other folders outside the checkout are the node's own (node-exporter's
    /) and stay bind mounts."""
    kept: list[dict[str, Any]] = []
    files: dict[str, Path] = {}
    deployers = [
        _named_by_settings(service, v)
        for v in volumes
        if isinstance(v, Mapping) and "${" in str(v.get("source", ""))
    ]
    # Folders first, then single files, so a file mounted over a folder's copy wins (the tests'
    # second Compose file mounts a faster-scraping prometheus.yml over services/prometheus).
    binds = [v for v in volumes if isinstance(v, Mapping) and v.get("type") == "bind"]
    for volume in sorted([*binds, *deployers], key=lambda v: Path(v["source"]).is_file()):
        source = Path(volume["source"])
        deployer = volume in deployers
        inside_repo = source.is_relative_to(REPO_ROOT)
        read_only = volume.get("read_only") is True
        if inside_repo and not read_only:
            raise SwarmFormError(f"{service}: a writable bind mount of {source} has no Swarm form")
        if not read_only or not (inside_repo or deployer or source.is_file()):
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
        if not isinstance(volume, Mapping):
            raise SwarmFormError(f"{service}: volume {volume!r} is not in Compose's long form")
        if volume.get("type") != "bind" and "${" not in str(volume.get("source", "")):
            entry = {k: volume[k] for k in ("type", "source", "target", "read_only") if k in volume}
            kept.append(entry)
    return kept, *_shipped(service, files, configs, secrets)


def _shipped(
    service: str,
    files: Mapping[str, Path],
    configs: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The deploying machine's files (target → path) as (configs, secrets) of the service."""
    mounted, hidden = [], []
    for target, path in files.items():
        if path.stat().st_size > CONFIG_MAX_BYTES:
            raise SwarmFormError(f"{service}: {path} is too large for a Swarm config")
        key = _config_key(path)
        if _private(path):
            secrets[key] = {"file": str(path)}
            # Read by nginx's master (root) before it drops to its workers' user.
            hidden.append({"source": key, "target": target, "mode": 0o400})
        else:
            configs[key] = {"file": str(path)}
            # World-readable: the services run as users of their own (nobody, 10001, nginx).
            mounted.append({"source": key, "target": target, "mode": 0o444})
    return mounted, hidden


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


def fold_one_shots(services: dict[str, dict[str, Any]]) -> set[str]:
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


def swarm_service(
    name: str,
    service: dict[str, Any],
    named_volumes: set[str],
    configs: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """One service's swarm form (changed in place on the way); its configs and secrets go into
    `configs` and `secrets`."""
    swarm_only = service.pop(SWARM_ENVIRONMENT, None)
    if swarm_only:
        environment = service.get("environment") or {}
        if not isinstance(swarm_only, Mapping) or not isinstance(environment, Mapping):
            raise SwarmFormError(f"{name}: {SWARM_ENVIRONMENT} and environment must be mappings")
        service["environment"] = {**environment, **swarm_only}
    volumes, mounted, hidden = _mounts(name, list(service.get("volumes", [])), configs, secrets)
    tmpfs = service.get("tmpfs") or []
    volumes += [
        {"type": "tmpfs", "target": path} for path in ([tmpfs] if isinstance(tmpfs, str) else tmpfs)
    ]
    if "ports" in service:
        service["ports"] = swarm_ports(service["ports"])
    own_volumes = [
        v["source"] for v in volumes if v.get("type") == "volume" and v["source"] in named_volumes
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
    return {
        **kept,
        **({"volumes": volumes} if volumes else {}),
        **({"configs": mounted} if mounted else {}),
        **({"secrets": hidden} if hidden else {}),
    }
