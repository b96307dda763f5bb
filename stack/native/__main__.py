"""`python -m stack.native up|down|ps|logs|clean|render|reload`: the native stack, run by `make`
when no Docker engine answers (or with STACK=native)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from stack.envfile import stack_env
from stack.monitoring_auth import USER, MonitoringAuthError
from stack.native.render import render_all
from stack.native.runner import (
    StackError,
    down,
    ensure_packages,
    stack_dirs,
    supervisorctl,
    supervisord_pid,
    up,
)
from stack.paths import REPO_ROOT
from stack.topology import Topology


def print_urls(topology: Topology) -> None:
    prometheus = topology.url("prometheus")
    print(
        "\nThe native stack is up (Grafana needs Docker; its panels' queries run in Prometheus):\n"
        f"  API through nginx   {topology.url('nginx')}   (docs: {topology.url('nginx')}/docs)\n"
        f"  Prometheus          {prometheus}/classic/targets\n"
        f"  Alertmanager        {topology.url('alertmanager')}\n"
        f"  (both: user {USER}, password MONITORING_PASSWORD in .env)\n"
        f"  Data and logs       {stack_dirs().root}\n",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.native", description=__doc__)
    commands = ["up", "down", "ps", "logs", "clean", "render", "reload"]
    parser.add_argument("command", choices=commands)
    parser.add_argument("services", nargs="*", help="for logs: only these programs")
    args = parser.parse_args(argv)
    env = stack_env(REPO_ROOT)
    topology = Topology.from_env(env)
    dirs = stack_dirs()
    try:
        if args.command == "up":
            ensure_packages()
            start = time.monotonic()
            up(env, topology, dirs)
            print_urls(topology)
            print(f"healthy in {time.monotonic() - start:.1f}s")
        elif args.command == "render":
            render_all(topology, env, dirs, as_root=os.geteuid() == 0)
        elif args.command == "reload":
            # Prometheus has no HTTP lifecycle endpoint: SIGHUP re-reads the freshly rendered
            # prometheus.yml and the rules.
            render_all(topology, env, dirs, as_root=os.geteuid() == 0)
            print(supervisorctl(dirs, "signal", "HUP", "prometheus"), end="")
        elif args.command == "down":
            down(dirs)
        elif args.command == "ps":
            if supervisord_pid(dirs) is None:
                print("the native stack is not running")
                return 0
            print(supervisorctl(dirs, "status", check=False), end="")
        elif args.command == "logs":
            names = args.services or ["*"]
            files = sorted({str(p) for n in names for p in dirs.logs.glob(f"{n}.log")})
            if not files:
                raise StackError(f"no logs under {dirs.logs}")
            os.execvp("tail", ["tail", "-n", "50", "-F", *files])  # noqa: S606
        elif args.command == "clean":
            down(dirs)
            shutil.rmtree(dirs.root, ignore_errors=True)
            print(f"removed {dirs.root}")
    except (StackError, MonitoringAuthError) as exc:
        print(f"native stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
