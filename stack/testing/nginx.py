"""The stack's real nginx.conf, rendered natively on free loopback ports, in front of stand-in
replicas: for the tests that check what clients and replicas actually see.

    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        status, headers, body, _ = nginx.request("GET", "/items")
        answer = nginx.raw(b"GET /it\\xc3\\xa9ms HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")

    with run_nginx([upstream.address], https="serve") as nginx:   # plus HTTPS, a test CA's
        status, headers, body, _ = nginx.request("GET", "/items", tls=True)
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stack.config import nginx as render
from stack.procs import free_port, stop_process
from stack.tls import TlsEntry, check_pair
from stack.tls.local_ca import LocalCertificate, ensure_local_certificate

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROBLEM = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


@dataclass(frozen=True)
class Answer:
    """One response read off a socket byte for byte, or `status` 0 when none came."""

    status: int
    headers: dict[str, str]
    body: bytes


def tls_context(ca: Path) -> ssl.SSLContext:
    """A client context that trusts `ca` alone and checks the host name, as curl --cacert does."""
    return ssl.create_default_context(cafile=str(ca))


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


def raw_request(
    port: int, data: bytes, *, timeout: float = 10, tls: ssl.SSLContext | None = None
) -> Answer:
    """`data` on a connection of its own, exactly as given (inside TLS with `tls`); the response
    nginx sends, if any."""
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        if tls is not None:
            conn = stack.enter_context(tls.wrap_socket(conn, server_hostname="localhost"))
        conn.sendall(data)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                received = _without_interim(received + chunk)
                head, found, rest = received.partition(b"\r\n\r\n")
                length = _content_length(head) if found else None
                if length is not None and len(rest) >= length:
                    break
    return parse_answer(received)


def _without_interim(received: bytes) -> bytes:
    """Drops complete 1xx responses (100 Continue) ahead of the final one."""
    while re.match(rb"HTTP/1\.[01] 1\d\d ", received) and b"\r\n\r\n" in received:
        received = received.partition(b"\r\n\r\n")[2]
    return received


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


def parse_answer(received: bytes) -> Answer:
    if not received:
        return Answer(0, {}, b"")
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    return Answer(int(lines[0].split()[1]), headers, body)


def assert_raw_problem(answer: Answer, status: int) -> dict[str, Any]:
    """The one error shape (stack.testing.api.assert_problem) on a raw answer."""
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == PROBLEM, answer.headers
    document: dict[str, Any] = json.loads(answer.body)
    assert document.keys() >= PROBLEM_KEYS, document
    assert document["status"] == status
    assert document["type"].startswith("https://")
    assert document["title"]
    assert document["detail"]
    assert document["request_id"] == answer.headers["x-request-id"]
    return document


class EchoUpstream:
    """A stand-in API replica: answers with what it received, as JSON, with a fixed status.

    location: answer 307 with this Location ("{host}" is the Host header it got), the way
        Starlette builds its trailing-slash redirects.
    delay: seconds to wait before answering (a hung replica).
    body_deadline: seconds from the request header to the end of the body; a body that is not
        complete by then gets a 408 problem at once (what the API's body deadline does).
    """

    def __init__(
        self,
        status: int = 200,
        *,
        location: str | None = None,
        delay: float = 0,
        body_deadline: float | None = None,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; Nagle + delayed ACK would add 40 ms to each.
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                seen: dict[str, Any] = {
                    "method": self.command,
                    "path": self.path,
                    "version": self.request_version,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "header_at": time.monotonic(),
                }
                upstream.requests.append(seen)
                if not self._read_body(seen):
                    close = {"Connection": "close"}
                    self._send(408, b'{"status":408}', "application/problem+json", close)
                    self.close_connection = True
                    return
                time.sleep(delay)
                extra = {}
                answer_status = status
                if location is not None:
                    extra["Location"] = location.format(host=self.headers.get("Host", ""))
                    answer_status = 307
                self._send(answer_status, json.dumps(seen).encode(), "application/json", extra)

            def _read_body(self, seen: dict[str, Any]) -> bool:
                """Reads the body (Content-Length or chunked); False when the deadline passed."""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self._line(seen).split(b";")[0], 16):
                        chunks.append(self._exactly(size, seen))
                        self._exactly(2, seen)
                    self._line(seen)
                    body = b"".join(chunks)
                else:
                    body = self._exactly(int(self.headers.get("Content-Length") or 0), seen)
                seen["body_bytes"] = len(body)
                seen["body_complete"] = not seen.get("timed_out")
                return bool(seen["body_complete"])

            def _remaining(self, seen: dict[str, Any]) -> float | None:
                if body_deadline is None:
                    return None
                started: float = seen["header_at"]
                return max(started + body_deadline - time.monotonic(), 0.001)

            def _exactly(self, size: int, seen: dict[str, Any]) -> bytes:
                data = b""
                while len(data) < size and not seen.get("timed_out"):
                    self.connection.settimeout(self._remaining(seen))
                    try:
                        chunk = self.rfile.read1(size - len(data))
                    except TimeoutError:
                        seen["timed_out"] = True
                        break
                    if not chunk:
                        break
                    data += chunk
                self.connection.settimeout(None)
                return data

            def _line(self, seen: dict[str, Any]) -> bytes:
                line = b""
                while not line.endswith(b"\r\n") and not seen.get("timed_out"):
                    line += self._exactly(1, seen)
                return line.strip() or b"0"

            def _send(
                self, code: int, body: bytes, content_type: str, extra: dict[str, str]
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                # The API sets its own; nginx must not send two.
                self.send_header("X-Request-ID", "from-upstream")
                self.send_header("X-Frame-Options", "SAMEORIGIN")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> EchoUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


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
    def tls(self) -> ssl.SSLContext:
        assert self.certificate is not None, "run_nginx(..., https=...) serves HTTPS"
        return tls_context(self.certificate.ca)

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
