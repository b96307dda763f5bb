"""A local CA and a server certificate for localhost, made with the openssl command once.

For `make up` when `.env` names no certificate: the stack serves HTTPS out of the box, and a
client trusts it with the CA's certificate alone (`curl --cacert <folder>/ca.crt`), never with
`--insecure`. The CA lives as long as the folder (ten years), so a client that trusts it keeps
trusting the server certificates it signs later; the server certificate (397 days, the most a
browser accepts) is made again when it has less than 30 days left, is missing, or no longer
verifies against the CA.

ECDSA P-256 keys: the cheapest handshakes (docs/performance.md) and a key type every TLS 1.2
client with ECDHE supports. Private keys are 0600, certificates 0644; nothing here prints a key.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
SERVER_DAYS = 397
RENEW_BEFORE_SECONDS = 30 * 24 * 3600
# Every name a client on this machine reaches the stack by.
SERVER_NAMES = "DNS:localhost, IP:127.0.0.1, IP:::1"

_CONFIG = f"""\
[req]
distinguished_name = dn
prompt = no
[dn]
O = fastapi-stack
CN = fastapi-stack local CA
[server_dn]
O = fastapi-stack
CN = localhost
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {SERVER_NAMES}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""
_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class LocalCaError(RuntimeError):
    pass


@dataclass(frozen=True)
class LocalCertificate:
    ca: Path
    certificate: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["openssl", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            # Keys are created 0600 whatever the caller's umask.
            umask=0o077,
        )
    except FileNotFoundError:
        raise LocalCaError("openssl is not installed (Debian: apt-get install openssl)") from None


def _run(*args: str, cwd: Path) -> None:
    result = _openssl(*args, cwd=cwd)
    if result.returncode != 0:
        raise LocalCaError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _server_is_current(folder: Path) -> bool:
    ca, certificate = folder / "ca.crt", folder / "server.crt"
    if not ((folder / "server.key").is_file() and certificate.is_file()):
        return False
    fresh = _openssl(
        "x509", "-in", str(certificate), "-noout", "-checkend", str(RENEW_BEFORE_SECONDS),
        cwd=folder,
    )  # fmt: skip
    verified = _openssl("verify", "-CAfile", str(ca), str(certificate), cwd=folder)
    return fresh.returncode == 0 and verified.returncode == 0


def ensure_local_certificate(folder: Path) -> LocalCertificate:
    """The CA and server certificate in `folder`, made now if missing or due for renewal."""
    # Traversable, so a client run by another user can read the CA certificate; the keys are
    # the owner's alone.
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    folder.chmod(0o755)
    found = LocalCertificate(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".new-") as tmp:
        work = Path(tmp)
        (work / "openssl.cnf").write_text(_CONFIG)
        made_ca = False
        if not (found.ca.is_file() and (folder / "ca.key").is_file()):
            _run(
                "req", "-x509", "-config", "openssl.cnf", "-extensions", "ca", *_EC_KEY,
                "-keyout", "ca.key", "-out", "ca.crt", "-days", str(CA_DAYS),
                cwd=work,
            )  # fmt: skip
            # The key first: a CA certificate without its key would never be replaced.
            os.replace(work / "ca.key", folder / "ca.key")
            os.replace(work / "ca.crt", found.ca)
            made_ca = True
        if made_ca or not _server_is_current(folder):
            _run(
                "req", "-new", "-config", "openssl.cnf", "-subj", "/O=fastapi-stack/CN=localhost",
                *_EC_KEY, "-keyout", "server.key", "-out", "server.csr",
                cwd=work,
            )  # fmt: skip
            _run(
                "x509", "-req", "-in", "server.csr", "-CA", str(found.ca),
                "-CAkey", str(folder / "ca.key"), "-set_serial", f"0x{secrets.token_hex(16)}",
                "-days", str(SERVER_DAYS), "-extfile", "openssl.cnf", "-extensions", "server",
                "-out", "server.crt",
                cwd=work,
            )  # fmt: skip
            os.replace(work / "server.key", found.key)
            os.replace(work / "server.crt", found.certificate)
    for key in (folder / "ca.key", found.key):
        key.chmod(0o600)
    for certificate in (found.ca, found.certificate):
        certificate.chmod(0o644)
    return found
