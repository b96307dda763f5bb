"""Test stand-ins for the pinned upstream images, built from Debian packages on the project's own
engine (no registry is reachable from it) and tagged with the exact upstream names, so that
docker-compose.yml and the Dockerfiles run unchanged. They prove the wiring, not the upstream
images' internals: users run the real images, and on a user's engine nothing here is built.

    python3 -m stack.standins build      # missing or outdated stand-ins, on the project's engine
    python3 -m stack.standins services   # the Compose services that engine can run (make up)

Which images need one comes from docker-compose.yml and the two Dockerfiles; the stand-in for
`repo/name:tag` is tests/compose/standins/<name>/Dockerfile (Grafana has none: no package of it is
reachable). Each builds on a base that `debootstrap --variant=minbase` makes from the mirror of the
host's own apt configuration, carrying the host's apt sources, keys and CA bundle (the bases are
stack.standins_base's, what they carry stack.standins_host's). Bases and images are rebuilt only
when their inputs change (a hash kept in a label).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from stack import engine
from stack.engine_install import fetch, install_packages, package_index
from stack.standins_base import BASE, CACHE, LABEL, docker, ensure_base, label_of, log
from stack.standins_host import StandInError, mirror

# Named here too: the Compose tests read the mirror the stand-ins are built from.
__all__ = ["StandInError", "build", "main", "mirror", "services"]

REPO = engine.REPO
STANDINS = REPO / "tests" / "compose" / "standins"
PINNED_FROM = (
    REPO / "docker-compose.yml",
    REPO / "services/api/Dockerfile",
    REPO / "loadtest/Dockerfile",
)


def pinned_images() -> list[str]:
    """Every upstream image docker-compose.yml and the Dockerfiles name (not those built here)."""
    found = []
    for path in PINNED_FROM:
        pattern = r"^\s+image:\s*([^\s$]+)\s*$" if path.suffix == ".yml" else r"^FROM\s+(\S+)"
        found += re.findall(pattern, path.read_text(), re.MULTILINE)
    return sorted(set(found))


def base_suites(source: Path) -> list[str]:
    text = (source / "Dockerfile").read_text()
    return re.findall(rf"^FROM {re.escape(BASE)}:(\S+)", text, re.MULTILINE)


def standin_dir(image: str) -> Path:
    return STANDINS / image.rsplit(":", 1)[0].rsplit("/", 1)[-1]


def uv_binaries(image: str, context: Path) -> None:
    """uv's image holds the static binaries of its release: the musllinux wheel's, from the
    project's package index (the registry uv.lock names), checked against the index's hash."""
    version = image.rsplit(":", 1)[1]
    registry = package_index()
    with urllib.request.urlopen(f"{registry}/uv/", timeout=60) as response:  # noqa: S310
        index = response.read().decode()
    arch = platform.machine()
    wheel_name = rf"uv-{re.escape(version)}-py3-none-musllinux_1_1_{arch}\.whl"
    pattern = rf'href="([^"]*/{wheel_name})#sha256=([0-9a-f]+)"'
    match = re.search(pattern, index)
    if not match:
        raise StandInError(f"{registry}/uv/ has no musllinux {arch} wheel of uv {version}")
    wheel = fetch(urllib.parse.urljoin(f"{registry}/uv/", match.group(1)), match.group(2))
    with zipfile.ZipFile(wheel) as archive:
        for name in ("uv", "uvx"):
            target = context / name
            target.write_bytes(archive.read(f"uv-{version}.data/scripts/{name}"))
            target.chmod(0o755)


def build_one(env: dict[str, str], image: str, bases: dict[str, Future[str]]) -> str:
    source = standin_dir(image)
    context = CACHE / "context" / source.name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(source, context)
    if source.name == "uv":
        uv_binaries(image, context)
    digest = hashlib.sha256(image.encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    for suite in base_suites(source):
        digest.update(bases[suite].result().encode())
    wanted = digest.hexdigest()
    if label_of(env, image) == wanted:
        shutil.rmtree(context)
        return f"{image}: up to date"
    started = time.monotonic()
    logfile = CACHE / f"build-{source.name}.log"
    with logfile.open("w") as output:
        status = subprocess.run(
            ["docker", "build", "--label", f"{LABEL}={wanted}", "--tag", image, str(context)],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **env}, check=False,
        )  # fmt: skip
    shutil.rmtree(context)
    if status.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-20:])
        raise StandInError(
            f"building the stand-in for {image} failed; the end of {logfile}:\n{tail}"
        )
    return f"{image}: built in {time.monotonic() - started:.0f} s"


def build(env: dict[str, str] | None = None) -> None:
    """Build every stand-in that is missing or out of date, on the project's own engine only."""
    paths = engine.Paths.for_repo()
    if not engine.ours_answers(paths) or (env is not None and env != engine.our_env(paths)):
        raise StandInError(
            "stand-ins are built only on the engine `python3 -m stack.engine start` runs itself: "
            "a stand-in tagged like an upstream image would replace that image on your own engine, "
            "where the real ones are used. Start the project's engine first (`make engine`)."
        )
    env = engine.our_env(paths)
    install_packages()
    CACHE.mkdir(parents=True, exist_ok=True)
    images = pinned_images()
    for image in images:
        if not (standin_dir(image) / "Dockerfile").exists():
            log(f"{image}: no stand-in (no package of it is reachable); Compose runs without it")
    wanted = [image for image in images if (standin_dir(image) / "Dockerfile").exists()]
    suites = sorted({suite for image in wanted for suite in base_suites(standin_dir(image))})
    started = time.monotonic()
    # Bases and images in parallel, each image as soon as its own base is there: much of each
    # one's time is spent waiting on the mirror or the disk.
    with ThreadPoolExecutor(max_workers=3) as base_pool, ThreadPoolExecutor(3) as image_pool:
        bases = {suite: base_pool.submit(ensure_base, env, suite) for suite in suites}
        for future in [image_pool.submit(build_one, env, image, bases) for image in wanted]:
            log(future.result())
    log(f"{len(wanted)} stand-ins ready in {time.monotonic() - started:.0f} s")


def services() -> list[str]:
    """Compose's services the project's engine can run: those it builds or has an image for.
    Each one left out is named, with the reason, on stderr."""
    env = engine.our_env()
    # The settings file make passes to Compose (STACK_ENV_FILE), which may name another project.
    env_file = os.environ.get("STACK_ENV_FILE")
    options = ["--env-file", str(Path(env_file).resolve())] if env_file else []
    result = docker(env, "compose", *options, "config", "--format", "json", cwd=REPO, check=False)
    if result.returncode != 0:
        raise StandInError(f"docker compose config failed:\n{result.stderr.strip()}")
    config = json.loads(result.stdout)
    # migrate runs the image the api service builds: on a first `up` it is not there yet.
    built = {s.get("image") for s in config["services"].values() if "build" in s}
    runnable = []
    for name, service in sorted(config["services"].items()):
        image = service.get("image", "")
        present = docker(env, "image", "inspect", image, check=False).returncode == 0
        if "build" in service or image in built or present:
            runnable.append(name)
        else:
            log(f"{name} is not started: the project's engine has no {image} and no registry")
    return runnable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m stack.standins",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["build", "services"])
    args = parser.parse_args(argv)
    try:
        if args.command == "services":
            print(" ".join(services()))
        else:
            build()
    except engine.EngineError as error:
        log(str(error))
        return 1
    except subprocess.CalledProcessError as error:
        log(f"{' '.join(map(str, error.cmd))} failed:\n{error.stderr or ''}".rstrip())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
