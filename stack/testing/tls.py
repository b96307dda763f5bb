"""What a TLS client on this machine sees of nginx's HTTPS entry, through the tools people use:
Debian's curl (HTTP/2 with --cacert) and `openssl s_client` (protocols, ciphers, the certificate
presented).

    answer = curl(f"https://127.0.0.1:{port}/health/live", ca)   # answer.http_version == "2"
    assert not handshake(port, "-tls1_1").ok                     # refused by the server
    with permissive_server(certificate) as legacy:                # ... and not by the client:
        assert handshake(legacy, "-tls1_1").ok                    # it can speak TLS 1.1
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.procs import free_port, port_open, stop_process
from stack.tls.local_ca import LocalCertificate

# Debian's OpenSSL refuses TLS < 1.2 and SHA-1 signatures on its own (MinProtocol, SECLEVEL=2):
# without this the client, not the server, would be what refuses an old protocol.
LEGACY_CLIENT = ("-cipher", "DEFAULT@SECLEVEL=0")


@dataclass(frozen=True)
class Handshake:
    ok: bool
    protocol: str
    cipher: str
    output: str


def handshake(
    port: int, *args: str, servername: str = "localhost", brief: bool = True
) -> Handshake:
    """One `openssl s_client` handshake with 127.0.0.1:port (args: -tls1, -cipher X, ...).

    brief: `-brief`, which states the protocol and cipher right after the handshake; without
    it the output has the certificate and the session (-sess_in/-sess_out, Reused) instead.
    """
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername,
         *(["-brief"] if brief else []), *args],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    if brief:
        protocol = re.search(r"^Protocol version: (\S+)", output, flags=re.MULTILINE)
        cipher = re.search(r"^Ciphersuite: (\S+)", output, flags=re.MULTILINE)
    else:
        protocol = re.search(r"^\s*Protocol\s*: (\S+)", output, flags=re.MULTILINE)
        cipher = re.search(r"^(?:New|Reused), \S+, Cipher is (\S+)", output, flags=re.MULTILINE)
    negotiated = cipher[1] if cipher else ""
    ok = result.returncode == 0 and negotiated not in ("", "(NONE)")
    return Handshake(ok, protocol[1] if protocol else "", negotiated, output)


def presented_fingerprint(port: int) -> str:
    """SHA-256 of the certificate the server on 127.0.0.1:port presents, as openssl prints it."""
    hello = handshake(port, brief=False)
    assert hello.ok, hello.output
    pem = re.search(
        r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", hello.output, flags=re.DOTALL
    )
    assert pem, hello.output
    printed = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=pem[0],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return printed.stdout.strip().partition("=")[2]


@contextlib.contextmanager
def permissive_server(certificate: LocalCertificate) -> Iterator[int]:
    """`openssl s_server` with the same certificate accepting every protocol and cipher this
    OpenSSL has: the control that shows a client refused by nginx could have connected."""
    port = free_port()
    process = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
         "-cert", str(certificate.certificate), "-key", str(certificate.key),
         "-cipher", "ALL@SECLEVEL=0", "-www"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert process.poll() is None, "openssl s_server exited"
            assert time.monotonic() < deadline, "openssl s_server did not listen"
            time.sleep(0.05)
        yield port
    finally:
        stop_process(process)


@dataclass(frozen=True)
class CurlAnswer:
    status: int
    http_version: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def curl(url: str, ca: Path, *args: str) -> CurlAnswer:
    """Debian's curl with `--cacert ca` (HTTP/2 where the server offers it): no --insecure."""
    with tempfile.TemporaryDirectory(prefix="curl-") as tmp:
        body = Path(tmp) / "body"
        result = subprocess.run(
            ["curl", "--silent", "--show-error", "--cacert", str(ca), "--output", str(body),
             "--write-out", "%{json}\\n%{header_json}", "--max-time", "20", *args, url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary, _, headers = result.stdout.partition("\n")
        written = json.loads(summary)
        return CurlAnswer(
            int(written["response_code"]),
            str(written["http_version"]),
            {name: values[-1] for name, values in json.loads(headers).items()},
            body.read_bytes() if body.exists() else b"",
        )
