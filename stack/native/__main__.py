"""`python -m stack.native up|down|ps|logs|clean|render|reload`: the native stack, run by `make`
when no Docker engine answers (or with STACK=native)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from stack.envfile import settings_file, stack_env
from stack.monitoring_auth import USER, MonitoringAuthError
from stack.native.render import render_all
from stack.native.runner import (
    StackError,
    check_nginx,
    down,
    ensure_packages,
    stack_dirs,
    supervisorctl,
    supervisord_pid,
    up,
)
from stack.paths import REPO_ROOT
from stack.tls import TlsEntry, TlsError, describe, prepare
from stack.topology import Topology


def print_urls(topology: Topology, tls: TlsEntry) -> None:
    prometheus = topology.url("prometheus")
    https = f"https://{topology.address('nginx-tls')}"
    nginx = topology.url("nginx")
    plain = {
        "serve": f"  API through nginx   {nginx}   (docs: {nginx}/docs)\n",
        "redirect": f"  Plain HTTP          {nginx}   (redirects to HTTPS)\n",
        "off": "",
    }[tls.http_mode]
    print(
        "\nThe native stack is up (Grafana needs Docker; its panels' queries run in Prometheus):\n"
        f"{plain}"
        f"  API over HTTPS      {https}   (HTTP/2; docs: {https}/docs)\n"
        f"{describe(tls, https)}"
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
            # Before anything starts: a bad certificate or key is a message, not a half-started
            # stack with an nginx that cannot load its configuration.
            tls = prepare(env, settings_file(REPO_ROOT))
            up(env, topology, dirs, tls)
            print_urls(topology, tls)
            print(f"healthy in {time.monotonic() - start:.1f}s")
        elif args.command == "render":
            tls = prepare(env, settings_file(REPO_ROOT))
            render_all(topology, env, dirs, tls=tls, as_root=os.geteuid() == 0)
        elif args.command == "reload":
            # The certificate and key are checked, and the rendered nginx configuration with
            # `nginx -t`, before nginx is told: a bad one is refused here with its reason.
            # nginx re-reads its files on SIGHUP and swaps workers without dropping a
            # connection (a new certificate applies to new handshakes); Prometheus has no HTTP
            # lifecycle endpoint and re-reads prometheus.yml and the rules on SIGHUP too.
            tls = prepare(env, settings_file(REPO_ROOT))
            render_all(topology, env, dirs, tls=tls, as_root=os.geteuid() == 0)
            check_nginx(dirs)
            print(supervisorctl(dirs, "signal", "HUP", "nginx", "prometheus"), end="")
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
    except (StackError, MonitoringAuthError, TlsError) as exc:
        print(f"native stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
