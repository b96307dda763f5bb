"""`python3 -m stack.tls check|compose-env`: the HTTPS entry, before `make up` starts anything.

check        make the local certificate if none is configured, check the one nginx will
             serve, say which it is (and the CA to trust); exit 1 with the reason otherwise
compose-env  the same check, then Compose's entry/ includes rendered into a folder beside the
             certificate, and the variables docker-compose.yml mounts them by, as shell
             assignments for the Makefile to export:
               NGINX_TLS_CERT, NGINX_TLS_KEY  the files to mount (absolute)
               NGINX_TLS_ENTRY                the rendered entry/ folder
               NGINX_TLS_DIGEST               changes with any of them, so `make up`
                                              recreates nginx when the certificate or the
                                              entry settings changed
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys

from stack.config.nginx import (
    COMPOSE_CERTIFICATE,
    COMPOSE_KEY,
    COMPOSE_RESOLVER,
    COMPOSE_TLS_PORT,
    ENTRY_FILES,
    HttpsEntry,
    render_compose_entry,
)
from stack.envfile import settings_file, stack_env
from stack.paths import REPO_ROOT
from stack.tls import TlsEntry, TlsError, describe, prepare, tls_dir


def compose_env(tls: TlsEntry) -> dict[str, str]:
    entry_dir = tls_dir(settings_file(REPO_ROOT)) / "compose-entry"
    https = HttpsEntry(
        COMPOSE_TLS_PORT,
        tls.port,
        COMPOSE_CERTIFICATE,
        COMPOSE_KEY,
        tls.http_mode,
        COMPOSE_RESOLVER if tls.ocsp else None,
    )
    render_compose_entry(entry_dir, https)
    digest = hashlib.sha256(tls.fingerprint.encode())
    for name in ENTRY_FILES:
        digest.update((entry_dir / name).read_bytes())
    return {
        "NGINX_TLS_CERT": str(tls.certificate),
        "NGINX_TLS_KEY": str(tls.key),
        "NGINX_TLS_ENTRY": str(entry_dir),
        "NGINX_TLS_DIGEST": digest.hexdigest()[:16],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.tls", description=__doc__)
    parser.add_argument("command", choices=["check", "compose-env"])
    args = parser.parse_args(argv)
    env = stack_env(REPO_ROOT)
    try:
        tls = prepare(env, settings_file(REPO_ROOT))
    except TlsError as exc:
        print(f"HTTPS: {exc}; nothing was started", file=sys.stderr)
        return 1
    if args.command == "check":
        print(f"HTTPS on port {tls.port} (plain HTTP: {tls.http_mode})")
        print(describe(tls, f"https://127.0.0.1:{tls.port}"), end="")
    else:
        for name, value in compose_env(tls).items():
            print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
