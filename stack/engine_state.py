"""The project's own Docker engine as this machine has it: where its files are (under
.cache/engine/, or a short runtime path for a deep checkout), whether its dockerd runs and answers,
and whether a user's own engine answers instead. Standard library only, like stack.engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from stack import engine_host as host

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "engine"
STATE = CACHE / "state.json"
CONFIG = CACHE / "config"
# sun_path holds 107 bytes and a NUL; the deepest socket under the exec-root is containerd's.
SUN_PATH_MAX = 107
DEEPEST_SOCKET = "/containerd/containerd.sock.ttrpc"


class EngineError(RuntimeError):
    """Said to the user as is: what went wrong and what to do."""


@dataclasses.dataclass(frozen=True)
class Paths:
    data_root: Path
    exec_root: Path
    socket: Path
    pidfile: Path
    log: Path

    @classmethod
    def for_repo(cls) -> Paths:
        exec_root = CACHE / "run"
        if len(str(exec_root)) + len(DEEPEST_SOCKET) > SUN_PATH_MAX:
            # A deep checkout: containerd's sockets would not fit; a short path of our own instead.
            digest = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
            exec_root = Path("/run") / f"fastapi-stack-{digest}"
        socket = CACHE / "docker.sock"
        if len(str(socket)) > SUN_PATH_MAX:
            socket = exec_root / "docker.sock"
        return cls(CACHE / "data", exec_root, socket, CACHE / "dockerd.pid", CACHE / "dockerd.log")


def log(message: str) -> None:
    print(f"engine: {message}", file=sys.stderr, flush=True)


def our_env(paths: Paths | None = None) -> dict[str, str]:
    paths = paths or Paths.for_repo()
    return {"DOCKER_HOST": f"unix://{paths.socket}", "DOCKER_CONFIG": str(CONFIG)}


def load_state() -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads(STATE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def our_pid(paths: Paths) -> int | None:
    """dockerd's pid, only if the process is the dockerd we started (its --pidfile is ours)."""
    try:
        pid = int(paths.pidfile.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    if Path(argv[0].decode()).name == "dockerd" and f"--pidfile={paths.pidfile}".encode() in argv:
        return pid
    return None


def ours_answers(paths: Paths) -> bool:
    return our_pid(paths) is not None and host.ping_unix(str(paths.socket))


def users_engine_answers() -> bool:
    """Whether an engine answers the way a plain `docker` would reach it, ours left out."""
    ours = our_env()
    env = {k: v for k, v in os.environ.items() if k not in ours or v != ours[k]}
    docker_host = env.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        return host.ping_unix(docker_host.removeprefix("unix://"))
    if not docker_host and host.ping_unix("/var/run/docker.sock"):
        return True
    if shutil.which("docker") is None:
        return False
    # Contexts, tcp:// and ssh:// hosts: only the CLI knows how to reach them.
    result = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        env=env,
        timeout=20,
        check=False,
    )
    return result.returncode == 0
