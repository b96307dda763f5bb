"""The stack's real nginx.conf, rendered natively on free loopback ports, in front of stand-in
replicas: for the tests that check what clients and replicas actually see.

    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        status, headers, body, _ = nginx.request("GET", "/items")
        answer = nginx.raw(b"GET /it\\xc3\\xa9ms HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")

    with run_nginx([upstream.address], https="serve") as nginx:   # plus HTTPS, a test CA's
        status, headers, body, _ = nginx.request("GET", "/items", tls=True)

The parts that speak to it live in their own modules and are named here too, so that a test
imports its nginx kit from one place: raw HTTP (stack.testing.raw_http) and the stand-in replica
(stack.testing.echo_upstream).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stack.config import nginx as render
from stack.procs import free_port, stop_process
from stack.testing.echo_upstream import EchoUpstream
from stack.testing.raw_http import (
    PROBLEM,
    PROBLEM_KEYS,
    Answer,
    assert_raw_problem,
    parse_answer,
    raw_request,
    tls_context,
)
from stack.tls import TlsEntry, check_pair
from stack.tls.local_ca import LocalCertificate, ensure_local_certificate

__all__ = [
    "NGINX",
    "PROBLEM",
    "PROBLEM_KEYS",
    "Answer",
    "EchoUpstream",
    "RunningNginx",
    "assert_raw_problem",
    "parse_answer",
    "raw_request",
    "run_nginx",
    "throwaway_certificate",
    "throwaway_tls",
    "tls_context",
]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@functools.cache
def throwaway_certificate() -> LocalCertificate:
    """One local CA and localhost certificate per test process (stack/tls/local_ca.py), in a
    folder removed when the process exits."""
    folder = tempfile.TemporaryDirectory(prefix="nginx-test-tls-")
    # Kept alive (and so not removed) for as long as the cached result is.
    _TEMPORARY.append(folder)
    return ensure_local_certificate(Path(folder.name) / "tls")


_TEMPORARY: list[tempfile.TemporaryDirectory[str]] = []


def throwaway_tls(http_mode: str = "serve", port: int = 8443) -> TlsEntry:
    """A checked HTTPS entry with throwaway_certificate(), for rendering a native stack's files
    (stack.native.render.render_all) without making a CA in the checkout."""
    certificate = throwaway_certificate()
    fingerprint, ocsp = check_pair(certificate.certificate, certificate.key)
    return TlsEntry(
        http_mode, port, certificate.certificate, certificate.key, certificate.ca, fingerprint, ocsp
    )


class RunningNginx:
    def __init__(
        self,
        prefix: Path,
        public_port: int,
        internal_port: int,
        tls_port: int | None = None,
        certificate: LocalCertificate | None = None,
    ) -> None:
        self.prefix = prefix
        self.public_port = public_port
        self.internal_port = internal_port
        self.access_log = prefix / "access.log"
        self.error_log = prefix / "stderr.log"
        # The HTTPS port and the certificate it serves (with its CA), when run with https=.
        self.tls_port = tls_port
        self.certificate = certificate

    @property
    def ca(self) -> Path:
        """The CA that signed the certificate served: what a client trusts (curl --cacert)."""
        assert self.certificate is not None, "run_nginx(..., https=...) serves HTTPS"
        return self.certificate.ca

    @property
    def tls(self) -> ssl.SSLContext:
        return tls_context(self.ca)

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.tls_port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        internal: bool = False,
        tls: bool = False,
    ) -> tuple[int, dict[str, str], bytes, list[tuple[str, str]]]:
        port = self.internal_port if internal else self.public_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        if tls:
            assert self.tls_port is not None
            conn = http.client.HTTPSConnection(
                "localhost", self.tls_port, timeout=10, context=self.tls
            )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            raw = response.getheaders()
            return response.status, {k.lower(): v for k, v in raw}, data, raw
        finally:
            conn.close()

    def raw(
        self, data: bytes, *, internal: bool = False, timeout: float = 10, tls: bool = False
    ) -> Answer:
        if tls:
            assert self.tls_port is not None
            return raw_request(self.tls_port, data, timeout=timeout, tls=self.tls)
        port = self.internal_port if internal else self.public_port
        return raw_request(port, data, timeout=timeout)

    def log_lines(self, at_least: int = 1) -> list[dict[str, Any]]:
        # nginx writes the log line after the response has gone out: wait for it.
        deadline = time.monotonic() + 5
        while True:
            text = self.access_log.read_text() if self.access_log.exists() else ""
            lines = [json.loads(line) for line in text.splitlines() if line]
            if len(lines) >= at_least or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)


def _edit(conf: Path, replace: Mapping[str, str]) -> None:
    """Test-only values (short timeouts) in the copy of nginx.conf; each original must be there
    exactly once, so a test never silently runs against something else."""
    text = conf.read_text()
    for old, new in replace.items():
        assert text.count(old) == 1, f"{old!r} is not in nginx.conf exactly once"
        text = text.replace(old, new)
    conf.write_text(text)


@contextlib.contextmanager
def run_nginx(
    upstreams: list[str],
    *,
    replace: Mapping[str, str] | None = None,
    https: str | None = None,
    certificate: LocalCertificate | None = None,
    **render_kwargs: Any,
) -> Iterator[RunningNginx]:
    """https: serve HTTPS too, with NGINX_HTTP's value for the plain port (serve, redirect,
    off), and `certificate` (default: the test process's local CA's, throwaway_certificate())."""
    assert Path(NGINX).is_file(), f"nginx is not installed at {NGINX} (apt-get install nginx)"
    # Run as root, nginx's workers drop to `nobody`, which must reach the prefix: pytest's own
    # tmp dirs are 0700, so this one is made world-traversable.
    prefix = Path(tempfile.mkdtemp(prefix="nginx-test-", dir="/tmp"))
    prefix.chmod(0o755)
    public_port, internal_port = free_port(), free_port()
    tls_port, entry = None, None
    if https is not None:
        certificate = certificate or throwaway_certificate()
        tls_port = free_port()
        # The responders of test certificates are on loopback: any resolver will do.
        ocsp = check_pair(certificate.certificate, certificate.key)[1]
        entry = render.HttpsEntry(
            tls_port,
            tls_port,
            str(certificate.certificate),
            str(certificate.key),
            https,
            "127.0.0.1" if ocsp else None,
        )
    conf = render.render_nginx(
        prefix,
        upstreams,
        public_port,
        internal_port,
        access_log=str(prefix / "access.log"),
        https=entry,
        **render_kwargs,
    )
    _edit(conf, replace or {})
    running = RunningNginx(prefix, public_port, internal_port, tls_port, certificate)
    errors = running.error_log.open("w")
    process = subprocess.Popen(
        render.nginx_command(prefix, nginx=NGINX),
        stdin=subprocess.DEVNULL,
        stdout=errors,
        stderr=errors,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, running.error_log.read_text()
            with contextlib.suppress(OSError):
                if running.request("GET", "/healthz", internal=True)[0] == 200:
                    break
            assert time.monotonic() < deadline, "nginx did not answer /healthz in 10 s"
            time.sleep(0.05)
        yield running
    finally:
        stop_process(process)
        errors.close()
        shutil.rmtree(prefix, ignore_errors=True)
