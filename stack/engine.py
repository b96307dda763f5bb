"""The project's own Docker engine, for tests and `make engine` on machines that have none.

    python3 -m stack.engine start [--standins] | stop | status | env

`start` uses an engine that already answers (DOCKER_HOST, the default socket, the CLI's context).
Otherwise, as root, it installs Debian's docker.io and runs a dockerd of the project's own, with
its data, config and log under .cache/engine/ (layers and volumes outlive a stop), one explicit
address pool and the host interface's MTU. `stop` ends that dockerd by its pid and takes back what
it changed on the host: bridges, iptables chains and rules, sysctls, the propagation of `/`, the
runtime directories. Standard library only: this runs with the system python3, before any venv.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from stack import engine_host as host
from stack.engine_install import compose_plugin, install_packages
from stack.engine_state import (
    CACHE,
    REPO,
    STATE,
    EngineError,
    Paths,
    load_state,
    log,
    our_env,
    our_pid,
    ours_answers,
    users_engine_answers,
)

# Named here too: the test harness and stack.standins reach the engine through this module.
__all__ = [
    "REPO",
    "Engine",
    "EngineError",
    "Paths",
    "ensure_engine",
    "main",
    "our_env",
    "ours_answers",
    "start",
    "status",
    "stop",
]

START_TIMEOUT = 60.0
# dockerd waits for each container's stop_grace_period (30 s here) plus 5 s before it exits.
STOP_TIMEOUT = 90.0


@dataclasses.dataclass(frozen=True)
class Engine:
    """An engine that answers. `env` reaches it (empty for the user's own engine, which the
    environment already reaches); `started` is true when this call started it, so whoever got
    it from ensure_engine() knows whether to stop() it."""

    env: dict[str, str]
    ours: bool
    started: bool
    # The dockerd this call started, held until stop() reaps it: a Popen dropped while its
    # process runs warns (ResourceWarning), which a strict test session turns into an error.
    process: subprocess.Popen[bytes] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def stop(self) -> None:
        if self.ours:
            stop()
        if self.process is not None:
            self.process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One start or stop at a time (make engine and a test session may race)."""
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        handle = (CACHE / "lock").open("w")
    except PermissionError:
        # Not root, in a cache root made: nothing can be started or stopped, only looked at.
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def dockerd_argv(paths: Paths) -> list[str]:
    # A config file of our own, so the host's /etc/docker/daemon.json (if any) does not apply,
    # and so the engine key lands in the cache instead of /etc/docker.
    config = CACHE / "daemon.json"
    config.write_text(json.dumps({"deprecated-key-path": str(CACHE / "key.json")}) + "\n")
    return [
        "dockerd",
        f"--config-file={config}",
        f"--data-root={paths.data_root}",
        f"--exec-root={paths.exec_root}",
        f"--pidfile={paths.pidfile}",
        f"--host=unix://{paths.socket}",
        "--storage-driver=overlay2",
        # The host's MTU: with Docker's default 1500 behind a smaller link, large transfers stall.
        f"--mtu={host.default_route_mtu()}",
        f"--default-address-pool={host.ADDRESS_POOL}",
        f"--bip={host.BRIDGE_IP}",
    ]


def start(standins: bool = False) -> Engine:
    paths = Paths.for_repo()
    with locked():
        engine = _start(paths)
    if standins:
        from stack import standins as images  # noqa: PLC0415 - only `start --standins` needs it

        if engine.ours:
            images.build(engine.env)
        else:
            log("stand-ins are built only on the project's own engine; yours runs the real images")
    return engine


def _start(paths: Paths) -> Engine:
    if ours_answers(paths):
        log(f"the project's engine already runs (pid {our_pid(paths)})")
        return Engine(our_env(paths), ours=True, started=False)
    if (pid := our_pid(paths)) is not None:
        raise EngineError(
            f"the project's dockerd (pid {pid}) runs but does not answer on {paths.socket}: "
            "its socket is root's, or it hangs (`make engine-stop` as root stops it)"
        )
    if users_engine_answers():
        log("a Docker engine already answers (DOCKER_HOST or the default socket): using it")
        # The caller's DOCKER_HOST / DOCKER_CONFIG / DOCKER_CONTEXT are how it answers: they go
        # with the engine, since test stacks drop the caller's DOCKER_* otherwise.
        callers = {k: v for k, v in os.environ.items() if k.startswith("DOCKER_")}
        return Engine(callers, ours=False, started=False)
    if os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers. Start Docker, or run `make engine` as root to start "
            "the project's own engine."
        )
    if load_state() is not None:
        log("a previous run of the project's engine left state behind: cleaning it up first")
        _stop(paths)
    install_packages()
    compose_plugin()
    for directory in (paths.data_root, paths.exec_root, paths.socket.parent):
        directory.mkdir(parents=True, exist_ok=True)
    # Written before dockerd starts, so a stop after a failed start still knows what to restore.
    STATE.write_text(json.dumps(host.snapshot(list(host.HOST_PATHS)), indent=2) + "\n")
    # node-exporter's `/:/host:ro,rslave` needs `/` to be a shared mount.
    host.set_propagation("/", "shared")
    with paths.log.open("w") as output:
        process = subprocess.Popen(
            dockerd_argv(paths),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not ours_answers(paths):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(paths.log.read_text(errors="replace").splitlines()[-20:])
            _stop(paths)
            raise EngineError(f"dockerd did not come up; the end of {paths.log}:\n{tail}")
        time.sleep(0.2)
    log(f"started the project's engine (pid {process.pid}); its data is in {paths.data_root}")
    return Engine(our_env(paths), ours=True, started=True, process=process)


def stop() -> None:
    paths = Paths.for_repo()
    with locked():
        _stop(paths)


def _stop(paths: Paths) -> None:
    state = load_state()
    if state is not None and os.geteuid() != 0:
        raise EngineError("only root can stop the project's engine (it runs as root)")
    if state is None:
        if our_pid(paths) is None:
            log("the project's engine is not running")
            return
        raise EngineError(f"dockerd {our_pid(paths)} runs without {STATE}: stop it by hand")
    pid = our_pid(paths)
    if pid is not None:
        if host.ping_unix(str(paths.socket)):
            env = {**os.environ, **our_env(paths)}
            swarm = subprocess.run(
                ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                capture_output=True, text=True, env=env, check=False, timeout=30,
            )  # fmt: skip
            if swarm.stdout.strip() not in {"", "inactive"}:
                # docker_gwbridge outlives the swarm; dockerd would recreate it on every start.
                for leave in (["swarm", "leave", "--force"], ["network", "rm", "docker_gwbridge"]):
                    subprocess.run(["docker", *leave], env=env, check=False)
        log(f"stopping dockerd {pid} (it stops its containers first)")
        os.kill(pid, signal.SIGTERM)
        if not host.wait_gone(pid, STOP_TIMEOUT):
            log(f"dockerd {pid} did not stop within {STOP_TIMEOUT:.0f} s: killing it")
            os.kill(pid, signal.SIGKILL)
            host.wait_gone(pid, 10)
    host.kill_engine_processes(paths.exec_root, paths.data_root)
    host.unmount_under([paths.data_root, paths.exec_root])
    host.restore(state)
    for leftover in (paths.socket, paths.pidfile):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(paths.exec_root, ignore_errors=True)
    problems = host.leftovers(state, paths.exec_root, paths.data_root)
    if problems:
        raise EngineError("the engine left something behind: " + "; ".join(problems))
    STATE.unlink()
    log("stopped the project's engine; no process, bridge, iptables chain or mount is left")


def status() -> str:
    paths = Paths.for_repo()
    if ours_answers(paths):
        return f"ours: the project's engine answers on {paths.socket} (pid {our_pid(paths)})"
    if (pid := our_pid(paths)) is not None:
        return f"ours: the project's dockerd (pid {pid}) runs but does not answer you"
    if users_engine_answers():
        return "user's: a Docker engine of your own answers"
    return "none: no Docker engine answers (start Docker, or `make engine` as root)"


def ensure_engine(standins: bool = False) -> Engine:
    """For tests: the engine that answers, the project's own started if none does."""
    return start(standins=standins)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m stack.engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="use the engine that answers, or start ours")
    start_cmd.add_argument("--standins", action="store_true", help="then build the stand-in images")
    commands.add_parser("stop", help="stop the project's engine and leave nothing behind")
    commands.add_parser("status", help="whose engine answers: ours, user's or none")
    commands.add_parser("env", help="DOCKER_HOST and DOCKER_CONFIG lines for the project's engine")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            engine = start(standins=args.standins)
            if engine.ours:
                log("use it from this shell with:  export $(python3 -m stack.engine env)")
                log("the Makefile finds it by itself:  STACK=compose make up | ps | logs | down")
        elif args.command == "stop":
            stop()
        elif args.command == "status":
            print(status())
        elif ours_answers(Paths.for_repo()):
            print("\n".join(f"{key}={value}" for key, value in our_env().items()))
    except EngineError as error:
        log(str(error))
        return 1
    except subprocess.CalledProcessError as error:
        log(f"{' '.join(map(str, error.cmd))} failed:\n{error.stderr or ''}".rstrip())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
