"""The Debian bases the stand-ins build on: `debootstrap --variant=minbase` from the host's own
mirror, with its apt sources, keys and CA bundle (stack.standins_host), imported into the
project's engine as fastapi-stack-standin/debian:<suite>. A base is remade only when its inputs
change: their hash is kept beside the cached tarball and in the image's label.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stack.engine_state import REPO
from stack.standins_host import StandInError, host_files, mirror, sources_for

CACHE = REPO / ".cache" / "standins"
BASE = "fastapi-stack-standin/debian"
LABEL = "org.fastapi-stack.standin.hash"
# Bump when the base recipe below changes, so cached tarballs and images are remade.
BASE_RECIPE = "1"
# Kept out of the bases, as Debian's slim images do: nothing in a stand-in reads them.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


def log(message: str) -> None:
    print(f"standins: {message}", file=sys.stderr, flush=True)


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
