"""Render the native variant of nginx's includes next to a copy of nginx.conf, and the entry/
includes (the public listens and TLS) for both runners.

services/nginx/nginx.conf is shared with Compose; only the includes it names under conf.d/ (the
runner's; Compose's are committed in services/nginx/compose/) and entry/ (the settings': plain
HTTP and HTTPS, certificate, redirect, HSTS) differ. nginx resolves relative `include` paths
against the directory of the -c file, so the native runner gets its own directory with a copy of
nginx.conf and the rendered includes, and the repository is never written to:

    conf = render_nginx(data_dir / "nginx", ["127.0.0.1:8001", "127.0.0.1:8002"], 8080, 8081,
                        https=HttpsEntry(8443, 8443, "/path/server.crt", "/path/server.key"))
    subprocess.Popen(nginx_command(data_dir / "nginx"))

Compose's entry/ is rendered by `render_compose_entry` on the host at `make up` (stack/tls) into a
folder docker-compose.yml mounts as /etc/nginx/entry.

or, from a shell: `python -m stack.config.nginx DIR --upstream 127.0.0.1:8001 ...`, which prints
the command line to run.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stack.paths import NGINX_DIR

NGINX_CONF = NGINX_DIR / "nginx.conf"
COMPOSE_INCLUDES = NGINX_DIR / "compose"
INCLUDE_DIR = "conf.d"
INCLUDE_FILES = ("http.conf", "upstream.conf", "internal_listen.conf")
ENTRY_DIR = "entry"
ENTRY_FILES = ("listen.conf", "tls.conf")
HTTP_MODES = ("serve", "redirect", "off")
# Where Compose's nginx finds the certificate and key (bind mounts, docker-compose.yml).
COMPOSE_CERTIFICATE = "/etc/nginx/tls/server.crt"
COMPOSE_KEY = "/etc/nginx/tls/server.key"
# The ports nginx listens on inside its container (published as NGINX_PORT, NGINX_TLS_PORT).
COMPOSE_HTTP_PORT = 8080
COMPOSE_TLS_PORT = 8443
# Docker's embedded DNS, which resolves an OCSP responder's name inside a container.
COMPOSE_RESOLVER = "127.0.0.11"
HSTS = "max-age=63072000"

# Values are written into nginx syntax, so anything that could end a directive is refused.
_UPSTREAM = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$")
_LISTEN_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])$")
_RATE = re.compile(r"^[1-9][0-9]*r/[sm]$")
_PATH = re.compile(r"^[^\s;'\"{}$\\]+$")
_DURATION = re.compile(r"^[1-9][0-9]*(?:ms|s|m)?$")


# limit_conn's largest number (ngx_http_limit_conn_module).
LIMIT_CONN_MAX = 65535


def _count(value: int, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return value


def _port(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{name} must be a TCP port (1-65535), got {value!r}")
    return value


@dataclass(frozen=True)
class HttpsEntry:
    """The HTTPS entry, as entry/ renders it; paths as nginx sees them.

    port: where nginx listens for HTTPS; public_port: where clients reach it (a redirect's
    target; the same natively, NGINX_TLS_PORT on the host under Compose). http_mode: what the
    plain port does (serve, redirect, off). ocsp_resolver: the certificate names an OCSP
    responder, whose name nginx resolves with this DNS server to staple its answers.
    """

    port: int
    public_port: int
    certificate: str
    key: str
    http_mode: str = "serve"
    ocsp_resolver: str | None = None

    def __post_init__(self) -> None:
        _port(self.port, "HTTPS port")
        _port(self.public_port, "public HTTPS port")
        if self.http_mode not in HTTP_MODES:
            raise ValueError(f"http_mode must be one of {HTTP_MODES}, got {self.http_mode!r}")
        for path in (self.certificate, self.key):
            if not _PATH.match(path):
                raise ValueError(
                    f"certificate and key paths must be plain (no spaces, quotes, ;): {path!r}"
                )
        if self.ocsp_resolver is not None and not _LISTEN_HOST.match(self.ocsp_resolver):
            raise ValueError(f"ocsp_resolver must be an address, got {self.ocsp_resolver!r}")


def _entry_files(
    plain_listen: str, https: HttpsEntry | None, *, tls_listen: str, http2_on: bool
) -> dict[str, str]:
    """entry/listen.conf and entry/tls.conf. http2_on: nginx >= 1.25.1's `http2 on;` (per
    server, so under Compose the plain port accepts HTTP/2 with prior knowledge too) instead of
    1.22's `listen ... http2` (per port)."""
    header = (
        "# Rendered by stack/config/nginx.py from the stack's settings; edits are overwritten.\n"
    )
    listen, tls = [], []
    if https is None or https.http_mode != "off":
        listen.append(f"listen {plain_listen} default_server;")
    hsts = redirect = plain_on_tls = ""
    if https is not None:
        listen.append(f"listen {tls_listen} ssl{'' if http2_on else ' http2'} default_server;")
        if http2_on:
            listen.append("http2 on;")
        tls += [f"ssl_certificate {https.certificate};", f"ssl_certificate_key {https.key};"]
        if https.ocsp_resolver:
            # Only for a certificate that names a responder: for one that does not, nginx would
            # warn at every start that it ignores the directive.
            tls += [
                "ssl_stapling on;",
                "ssl_stapling_verify on;",
                f"resolver {https.ocsp_resolver} valid=300s ipv6=off;",
                "resolver_timeout 5s;",
            ]
        if https.http_mode != "serve":
            hsts = f'    on "{HSTS}";\n'
        if https.http_mode == "redirect":
            port = "" if https.public_port == 443 else f":{https.public_port}"
            redirect = f'    http "https://$redirect_host{port}$request_uri";\n'
        plain_on_tls = f'    "{https.port}:" 1;\n'
    tls += [
        "# HSTS (nginx.conf's add_header): only where HTTPS is the only entry.",
        f'map $https $strict_transport_security {{\n{hsts}    default "";\n}}',
        "# Plain HTTP requests go to HTTPS when NGINX_HTTP=redirect.",
        f'map $scheme $https_redirect {{\n{redirect}    default "";\n}}',
        "# A plain HTTP request on the HTTPS port (nginx's 497): its 400 problem says so.",
        f'map "$server_port:$https" $plain_http_on_tls_port {{\n{plain_on_tls}    default "";\n}}',
    ]
    return {
        "listen.conf": header + "".join(f"{line}\n" for line in listen),
        "tls.conf": header + "".join(f"{line}\n" for line in tls),
    }


def _write_entry(entry_dir: Path, files: dict[str, str]) -> None:
    assert tuple(files) == ENTRY_FILES
    entry_dir.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (entry_dir / name).write_text(body, encoding="utf-8")


def render_compose_entry(entry_dir: Path, https: HttpsEntry) -> None:
    """Compose's entry/ (mounted as /etc/nginx/entry): the listens on the container's ports and
    the certificate at the paths docker-compose.yml mounts it at."""
    if (https.port, https.certificate, https.key) != (
        COMPOSE_TLS_PORT, COMPOSE_CERTIFICATE, COMPOSE_KEY,
    ):  # fmt: skip
        raise ValueError("under Compose nginx listens on 8443 and reads /etc/nginx/tls/")
    files = _entry_files(
        str(COMPOSE_HTTP_PORT), https, tls_listen=str(COMPOSE_TLS_PORT), http2_on=True
    )
    _write_entry(entry_dir, files)


def render_nginx(
    conf_dir: Path,
    upstreams: Sequence[str],
    public_port: int,
    internal_port: int,
    *,
    listen_host: str = "127.0.0.1",
    internal_listen_host: str = "127.0.0.1",
    access_log: str = "/dev/stdout",
    rate: str = "50r/s",
    max_fails: int = 3,
    fail_timeout: str = "10s",
    conn_limit: int = 100,
    https: HttpsEntry | None = None,
) -> Path:
    """Write conf_dir/nginx.conf (a copy), conf_dir/conf.d/*.conf and conf_dir/entry/*.conf;
    return the nginx.conf path.

    upstreams: "host:port" of each API replica, e.g. ["127.0.0.1:8001", "127.0.0.1:8002"].
    access_log: a file path (relative paths resolve against the -p prefix, i.e. conf_dir with
        nginx_command) or /dev/stdout for a supervisor that captures stdout. Its directory must
        exist: nginx creates the file, not the directories above it.
    rate: the per-client-IP limit_req rate ("50r/s"); the burst (100) is fixed in nginx.conf.
    conn_limit: requests in progress per client IP (limit_conn), Compose's value by default.
    https: the HTTPS entry (on listen_host); None serves plain HTTP only (tests that need no TLS).
    """
    hosts = list(upstreams)
    if not hosts:
        raise ValueError("at least one upstream is needed: nginx rejects an empty upstream block")
    for host in hosts:
        if not _UPSTREAM.match(host):
            raise ValueError(f"upstream must look like host:port, got {host!r}")
        _port(int(host.rsplit(":", 1)[1]), "upstream port")
    _port(public_port, "public_port")
    _port(internal_port, "internal_port")
    if public_port == internal_port:
        raise ValueError("public_port and internal_port must differ")
    if https is not None and https.port in (public_port, internal_port):
        raise ValueError("the HTTPS port must differ from the public and internal ports")
    for host in (listen_host, internal_listen_host):
        if not _LISTEN_HOST.match(host):
            raise ValueError(f"listen host must be an address or name, got {host!r}")
    if not _PATH.match(access_log):
        raise ValueError(f"access_log must be a plain path, got {access_log!r}")
    if not _RATE.match(rate):
        raise ValueError(f"rate must look like 50r/s or 600r/m, got {rate!r}")
    _count(max_fails, "max_fails", 0)
    # nginx refuses to start past limit_conn's largest number, and says so in its own log only.
    _count(conn_limit, "conn_limit", 1, LIMIT_CONN_MAX)
    if not _DURATION.match(fail_timeout):
        raise ValueError(f"fail_timeout must be an nginx duration like 10s, got {fail_timeout!r}")

    conf_dir = Path(conf_dir)
    if not _PATH.match(str(conf_dir.resolve())):
        raise ValueError(f"conf_dir must be a plain path (nginx_command puts it in -g): {conf_dir}")
    include_dir = conf_dir / INCLUDE_DIR
    include_dir.mkdir(parents=True, exist_ok=True)
    header = "# Rendered by stack/config/nginx.py for a native run; edits are overwritten.\n"
    server_lines = "".join(
        f"server {host} max_fails={max_fails} fail_timeout={fail_timeout};\n" for host in hosts
    )
    # Buffered (see compose/http.conf for why 4k and 1s): the native supervisor and Compose's log
    # driver then wake once per dozen lines, not once per request.
    files = {
        "http.conf": (
            f"access_log {access_log} json_log buffer=4k flush=1s;\n"
            f"limit_req_zone $binary_remote_addr zone=per_ip:10m rate={rate};\n"
            "limit_conn_zone $binary_remote_addr zone=per_ip_conn:10m;\n"
            f"limit_conn per_ip_conn {conn_limit};\n"
        ),
        "upstream.conf": server_lines,
        "internal_listen.conf": f"listen {internal_listen_host}:{internal_port} default_server;\n",
    }
    assert tuple(files) == INCLUDE_FILES
    for name, body in files.items():
        (include_dir / name).write_text(header + body, encoding="utf-8")
    entry = _entry_files(
        f"{listen_host}:{public_port}",
        https,
        tls_listen=f"{listen_host}:{https.port if https else 0}",
        http2_on=False,
    )
    _write_entry(conf_dir / ENTRY_DIR, entry)
    target = conf_dir / "nginx.conf"
    shutil.copyfile(NGINX_CONF, target)
    return target


def compose_http_conf(rate: str) -> str:
    """Compose's conf.d/http.conf (services/nginx/compose/) with another per-address rate: what a
    test stack mounts over it when all its clients share one address, as natively NGINX_RATE_LIMIT
    does."""
    if not _RATE.match(rate):
        raise ValueError(f"rate must look like 50r/s or 600r/m, got {rate!r}")
    text = (COMPOSE_INCLUDES / "http.conf").read_text(encoding="utf-8")
    changed, count = re.subn(r"(zone=per_ip:\S+ rate=)[0-9]+r/[sm];", rf"\g<1>{rate};", text)
    if count != 1:
        raise ValueError("services/nginx/compose/http.conf has no single limit_req_zone rate")
    return changed


def nginx_command(
    conf_dir: Path, *, nginx: str = "nginx", signal: str | None = None, test: bool = False
) -> list[str]:
    """The command line that runs the rendered configuration in conf_dir in the foreground.

    -p puts the temp directories under conf_dir and -g the pid file (nginx.conf has none: the
    distribution's default, /run/nginx.pid, needs root and belongs to the system's nginx), so
    nothing outside conf_dir is written; -e stderr keeps nginx away from the compiled-in error
    log before nginx.conf is read. With signal ("reload", "reopen", "quit", "stop") the same
    options address the master this command started; with test, `nginx -t` checks the files.
    """
    conf_dir = Path(conf_dir).resolve()
    if not _PATH.match(str(conf_dir)):
        raise ValueError(f"conf_dir must be a plain path (it goes into -g), got {conf_dir}")
    command = [nginx, "-e", "stderr", "-p", f"{conf_dir}/", "-c", str(conf_dir / "nginx.conf")]
    if test:
        return [*command, "-t", "-q", "-g", f"pid {conf_dir / 'nginx.pid'};"]
    if signal is None:
        return [*command, "-g", f"daemon off; pid {conf_dir / 'nginx.pid'};"]
    return [*command, "-g", f"pid {conf_dir / 'nginx.pid'};", "-s", signal]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("conf_dir", type=Path)
    parser.add_argument("--upstream", action="append", required=True, help="host:port, repeat")
    parser.add_argument("--public-port", type=int, required=True)
    parser.add_argument("--internal-port", type=int, required=True)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--access-log", default="/dev/stdout")
    parser.add_argument("--rate", default="50r/s")
    parser.add_argument("--nginx", default="nginx")
    args = parser.parse_args(argv)
    try:
        render_nginx(
            args.conf_dir,
            args.upstream,
            args.public_port,
            args.internal_port,
            listen_host=args.listen_host,
            internal_listen_host=args.listen_host,
            access_log=args.access_log,
            rate=args.rate,
        )
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(shlex.join(nginx_command(args.conf_dir, nginx=args.nginx)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
