"""Test stand-ins for the pinned upstream images, built from Debian packages on the project's own
engine (no registry is reachable from it) and tagged with the exact upstream names, so that
docker-compose.yml and the Dockerfiles run unchanged. They prove the wiring, not the upstream
images' internals: users run the real images, and on a user's engine nothing here is built.

    python3 -m stack.standins build      # missing or outdated stand-ins, on the project's engine
    python3 -m stack.standins services   # the Compose services that engine can run (make up)

Which images need one comes from docker-compose.yml and the two Dockerfiles; the stand-in for
`repo/name:tag` is tests/compose/standins/<name>/Dockerfile (Grafana has none: no package of it is
reachable). Each builds on a base that `debootstrap --variant=minbase` makes from the mirror of the
host's own apt configuration, carrying the host's apt sources, keys and CA bundle. Bases and
images are rebuilt only when their inputs change (a hash kept in a label).
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

REPO = engine.REPO
STANDINS = REPO / "tests" / "compose" / "standins"
CACHE = REPO / ".cache" / "standins"
BASE = "fastapi-stack-standin/debian"
LABEL = "org.fastapi-stack.standin.hash"
# Bump when the base recipe below changes, so cached tarballs and images are remade.
BASE_RECIPE = "1"
PINNED_FROM = (
    REPO / "docker-compose.yml",
    REPO / "services/api/Dockerfile",
    REPO / "loadtest/Dockerfile",
)
APT = Path("/etc/apt")
# Kept out of the bases, as Debian's slim images do: nothing in a stand-in reads them.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


class StandInError(engine.EngineError):
    """Said to the user as is."""


def log(message: str) -> None:
    print(f"standins: {message}", file=sys.stderr, flush=True)


# --- the host's apt configuration -------------------------------------------------------------


def _deb822(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif line.startswith("#"):
            continue
        elif line[0].isspace() and key:
            current[key] += " " + line.strip()
        else:
            key, _, value = line.partition(":")
            current[key.strip().lower()] = value.strip()
    return stanzas


def _one_line(text: str) -> list[dict[str, str]]:
    entries = []
    for raw in text.splitlines():
        options = ""
        line = raw.split("#", 1)[0].strip()
        if match := re.match(r"^(deb|deb-src)\s+\[([^]]*)\]\s+(.*)$", line):
            kind, options, rest = match.groups()
            line = f"{kind} {rest}"
        parts = line.split()
        if len(parts) >= 3:
            entry = {"types": parts[0], "uris": parts[1], "suites": parts[2]}
            entry["components"] = " ".join(parts[3:])
            for option in options.split():
                name, _, value = option.partition("=")
                entry[name.lower()] = value
            entries.append(entry)
    return entries


def host_sources() -> list[dict[str, str]]:
    """The host's enabled `deb` sources, as apt reads them (sources.list, *.list, *.sources)."""
    entries = []
    if (APT / "sources.list").exists():
        entries += _one_line((APT / "sources.list").read_text())
    for path in sorted((APT / "sources.list.d").glob("*")):
        if path.suffix == ".list":
            entries += _one_line(path.read_text())
        elif path.suffix == ".sources":
            entries += _deb822(path.read_text())
    return [
        e
        for e in entries
        if "deb" in e.get("types", "").split() and e.get("enabled", "yes").lower() != "no"
    ]


def host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise StandInError("/etc/os-release names no VERSION_CODENAME")


def debian_sources() -> list[dict[str, str]]:
    """The host's Debian archive entries: those that carry its release or its -updates/-security."""
    codename = host_codename()
    return [
        e
        for e in host_sources()
        if any(s == codename or s.startswith(f"{codename}-") for s in e["suites"].split())
    ]


def mirror() -> str:
    codename = host_codename()
    for entry in debian_sources():
        if codename in entry["suites"].split():
            return entry["uris"].split()[0]
    raise StandInError(f"no apt source of this host carries {codename}: no mirror to debootstrap")


def sources_for(suite: str) -> str:
    """The host's Debian entries moved to another suite, in deb822 form. sid has no -updates or
    -security, and its Release files outlive their Valid-Until on archive snapshots."""
    codename = host_codename()
    stanzas = []
    for entry in debian_sources():
        suites = [s.replace(codename, suite, 1) for s in entry["suites"].split()]
        if suite == "sid":
            suites = [s for s in suites if s == "sid"]
        if not suites:
            continue
        lines = ["Types: deb", f"URIs: {entry['uris']}", f"Suites: {' '.join(suites)}"]
        lines.append(f"Components: {entry.get('components') or 'main'}")
        if entry.get("signed-by"):
            lines.append(f"Signed-By: {entry['signed-by']}")
        if suite == "sid":
            lines.append("Check-Valid-Until: no")
        stanzas.append("\n".join(lines))
    return "\n\n".join(stanzas) + "\n"


def host_files() -> dict[Path, bytes]:
    """What a base carries from the host: keys its sources name, apt settings that reach the
    network (Acquire::: proxies, date checks), the CA bundle and the local CAs behind it."""
    files: dict[Path, bytes] = {}
    keys = [
        Path(e["signed-by"]) for e in debian_sources() if e.get("signed-by", "").startswith("/")
    ]
    for directory in (APT / "trusted.gpg.d", APT / "keyrings"):
        keys += sorted(p for p in directory.glob("*") if p.is_file()) if directory.is_dir() else []
    settings = sorted((APT / "apt.conf.d").glob("*")) if (APT / "apt.conf.d").is_dir() else []
    settings = [p for p in settings if p.is_file() and "Acquire::" in p.read_text(errors="replace")]
    local_cas = Path("/usr/local/share/ca-certificates")
    cas = sorted(p for p in local_cas.rglob("*") if p.is_file()) if local_cas.is_dir() else []
    for path in [*keys, *settings, *cas, Path("/etc/ssl/certs/ca-certificates.crt")]:
        if path.is_file():
            files[path] = path.read_bytes()
    return files


# --- bases ------------------------------------------------------------------------------------


def docker(
    env: dict[str, str], *args: str, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=check,
        timeout=1800,
        cwd=cwd,
    )


def label_of(env: dict[str, str], image: str) -> str:
    template = f'{{{{index .Config.Labels "{LABEL}"}}}}'
    result = docker(env, "image", "inspect", "--format", template, image, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def image_id(env: dict[str, str], image: str) -> str:
    return docker(env, "image", "inspect", "--format", "{{.Id}}", image).stdout.strip()


def base_hash(suite: str) -> str:
    digest = hashlib.sha256(f"{BASE_RECIPE}\n{suite}\n{mirror()}\n{sources_for(suite)}".encode())
    for path, content in sorted(host_files().items()):
        digest.update(str(path).encode() + b"\0" + content)
    return digest.hexdigest()


def make_rootfs(suite: str, rootfs: Path) -> None:
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    logfile = CACHE / f"debootstrap-{suite}.log"
    with logfile.open("w") as output:
        status = subprocess.run(
            ["debootstrap", "--variant=minbase", suite, str(rootfs), mirror()],
            stdout=output, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if status.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
        raise StandInError(f"debootstrap {suite} failed; the end of {logfile}:\n{tail}")
    for path, content in host_files().items():
        target = rootfs / path.relative_to("/")
        # The base's own newer keyring wins over the host's (a sid base needs its keys).
        if not (target.exists() and "keyring" in path.name):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources_for(suite))
    (rootfs / "etc/dpkg/dpkg.cfg.d/excludes").write_text(DPKG_EXCLUDES)
    # Package scripts must not try to start services while an image is built.
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    for directory in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        for path in sorted((rootfs / directory).rglob("*"), reverse=True):
            if path.is_file() and path.name not in {"copyright", "locale.alias"}:
                path.unlink()
    for directory in ("var/cache/apt", "var/lib/apt/lists"):
        for path in (rootfs / directory).rglob("*"):
            if path.is_file():
                path.unlink()


def ensure_base(env: dict[str, str], suite: str) -> str:
    tag = f"{BASE}:{suite}"
    wanted = base_hash(suite)
    if label_of(env, tag) != wanted:
        tarball = CACHE / f"debian-{suite}.tar"
        stamp = tarball.with_suffix(".hash")
        if not (tarball.exists() and stamp.exists() and stamp.read_text() == wanted):
            started = time.monotonic()
            rootfs = CACHE / f"rootfs-{suite}"
            make_rootfs(suite, rootfs)
            archive = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."]
            subprocess.run(archive, check=True)
            shutil.rmtree(rootfs)
            stamp.write_text(wanted)
            log(f"debootstrap {suite}: {time.monotonic() - started:.0f} s")
        changes = [f"LABEL {LABEL}={wanted}", "ENV LANG=C.UTF-8", 'CMD ["bash"]']
        changes.append("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        docker(env, "import", *(f"--change={c}" for c in changes), str(tarball), tag)
        log(f"imported {tag}")
    return image_id(env, tag)


# --- stand-ins --------------------------------------------------------------------------------


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
    registry = engine.package_index()
    with urllib.request.urlopen(f"{registry}/uv/", timeout=60) as response:  # noqa: S310
        index = response.read().decode()
    arch = platform.machine()
    wheel_name = rf"uv-{re.escape(version)}-py3-none-musllinux_1_1_{arch}\.whl"
    pattern = rf'href="([^"]*/{wheel_name})#sha256=([0-9a-f]+)"'
    match = re.search(pattern, index)
    if not match:
        raise StandInError(f"{registry}/uv/ has no musllinux {arch} wheel of uv {version}")
    wheel = engine.fetch(urllib.parse.urljoin(f"{registry}/uv/", match.group(1)), match.group(2))
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
    engine.install_packages()
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
    result = docker(env, "compose", "config", "--format", "json", cwd=REPO, check=False)
    if result.returncode != 0:
        raise StandInError(f"docker compose config failed:\n{result.stderr.strip()}")
    config = json.loads(result.stdout)
    runnable = []
    for name, service in sorted(config["services"].items()):
        image = service.get("image", "")
        present = docker(env, "image", "inspect", image, check=False).returncode == 0
        if "build" in service or present:
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
