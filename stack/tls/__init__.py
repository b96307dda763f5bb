"""HTTPS at nginx: which certificate and key it serves, checked before anything of the stack starts.

Settings (`.env`, docs/CONTRACT.md):
    NGINX_TLS_PORT   host port of the HTTPS entry (8443)
    NGINX_HTTP       what the plain HTTP port (NGINX_PORT) does: serve (the API, beside HTTPS),
                     redirect (308 to HTTPS) or off (not opened natively; nothing answers behind
                     Compose's published port)
    NGINX_TLS_CERT   certificate (PEM, leaf first, then its chain) and
    NGINX_TLS_KEY    its unencrypted private key; both or neither. Relative paths are from the
                     checkout. Neither: a local CA and a localhost certificate made once
                     (stack/tls/local_ca.py) in `.data/tls/` beside the settings file.

`prepare` is what `make up` (both runners, before anything starts) and the native runner call: a
missing, unreadable, unparsable, expired or mismatched certificate or key stops the start with a
message naming the file and the setting, instead of an nginx that fails among running services.

Stdlib and the openssl command only: the Makefile runs this with the system's python3, before it
knows whether Compose or the native runner will start the stack.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stack.paths import REPO_ROOT
from stack.tls.local_ca import LocalCaError, ensure_local_certificate

HTTP_MODES = ("serve", "redirect", "off")
DEFAULT_TLS_PORT = 8443


class TlsError(RuntimeError):
    """Said to the user as is."""


@dataclass(frozen=True)
class TlsEntry:
    """What nginx's HTTPS entry serves, checked."""

    http_mode: str
    port: int
    certificate: Path
    key: Path
    # The local CA that signed `certificate`, when the stack made it; None for your own.
    ca: Path | None
    # SHA-256 of the certificate (DER), as `openssl x509 -fingerprint -sha256` prints it.
    fingerprint: str
    # The certificate names an OCSP responder: nginx staples its answers.
    ocsp: bool

    @property
    def https_only(self) -> bool:
        """HTTPS is the only way to the API: the plain port redirects or is closed (HSTS on)."""
        return self.http_mode != "serve"


def describe(tls: TlsEntry, url: str) -> str:
    """Which certificate nginx serves and, for the local CA's, how a client trusts it."""
    lines = [
        f"  Certificate         {tls.certificate}\n"
        f"                      SHA-256 {tls.fingerprint}\n"
    ]
    if tls.ca is not None:
        lines.append(
            f"  Local CA            {tls.ca}\n"
            f"                      curl --cacert {tls.ca} {url}/health/live\n"
        )
    return "".join(lines)


def tls_dir(env_file: Path) -> Path:
    """Where the local CA and its certificate live: `.data/tls/` beside the settings file
    (git-ignored), so a second stack with its own settings (a test's) has its own."""
    return Path(env_file).resolve().parent / ".data" / "tls"


def _setting_path(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _readable(path: Path, what: str, setting: str) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise TlsError(f"the TLS {what} {path} ({setting}) does not exist") from None
    except IsADirectoryError:
        raise TlsError(f"the TLS {what} {path} ({setting}) is a directory, not a file") from None
    except OSError as exc:
        raise TlsError(
            f"the TLS {what} {path} ({setting}) cannot be read: {exc.strerror}"
        ) from None


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["openssl", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        raise TlsError("openssl is not installed (Debian: apt-get install openssl)") from None


def check_pair(certificate: Path, key: Path) -> tuple[str, bool]:
    """(fingerprint, has an OCSP URL) of a certificate that nginx can serve with this key.

    Raises TlsError when either file is missing or unreadable, is not PEM of its kind, the key is
    encrypted (nginx would stop to ask for its passphrase), the key is not the certificate's,
    or the certificate has expired.
    """
    _readable(certificate, "certificate", "NGINX_TLS_CERT")
    _readable(key, "private key", "NGINX_TLS_KEY")
    cert_key = _openssl("x509", "-in", str(certificate), "-noout", "-pubkey")
    if cert_key.returncode != 0:
        raise TlsError(
            f"the TLS certificate {certificate} (NGINX_TLS_CERT) is not a PEM certificate"
        )
    # An empty passphrase on the command line: an encrypted key fails here instead of prompting.
    key_key = _openssl("pkey", "-in", str(key), "-pubout", "-passin", "pass:")
    if key_key.returncode != 0:
        raise TlsError(
            f"the TLS private key {key} (NGINX_TLS_KEY) is not an unencrypted PEM private key"
        )
    if cert_key.stdout != key_key.stdout:
        raise TlsError(
            f"the TLS private key {key} (NGINX_TLS_KEY) does not belong to the certificate "
            f"{certificate} (NGINX_TLS_CERT)"
        )
    if _openssl("x509", "-in", str(certificate), "-noout", "-checkend", "0").returncode != 0:
        raise TlsError(f"the TLS certificate {certificate} (NGINX_TLS_CERT) has expired")
    printed = _openssl("x509", "-in", str(certificate), "-noout", "-fingerprint", "-sha256")
    fingerprint = printed.stdout.strip().partition("=")[2]
    ocsp = _openssl("x509", "-in", str(certificate), "-noout", "-ocsp_uri").stdout.strip()
    return fingerprint, bool(ocsp)


def system_resolver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str | None:
    """The machine's first DNS server, for nginx to resolve an OCSP responder's name with (nginx
    reads no resolv.conf itself); None when there is none, and then nothing is stapled."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = fields[1].partition("%")[0]
            return f"[{address}]" if ":" in address else address
    return None


def http_mode(env: Mapping[str, str]) -> str:
    mode = env.get("NGINX_HTTP", "serve") or "serve"
    if mode not in HTTP_MODES:
        raise TlsError(f"NGINX_HTTP must be one of {', '.join(HTTP_MODES)}, got {mode!r}")
    return mode


def tls_port(env: Mapping[str, str]) -> int:
    value = env.get("NGINX_TLS_PORT", "") or str(DEFAULT_TLS_PORT)
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise TlsError(f"NGINX_TLS_PORT must be a TCP port (1-65535), got {value!r}")
    return int(value)


def prepare(env: Mapping[str, str], env_file: Path) -> TlsEntry:
    """The HTTPS entry the settings describe: the configured certificate, or the local one (made
    now if needed), checked."""
    mode, port = http_mode(env), tls_port(env)
    if str(port) == env.get("NGINX_PORT", "8080"):
        raise TlsError(f"NGINX_TLS_PORT and NGINX_PORT are both {port}")
    cert_setting, key_setting = env.get("NGINX_TLS_CERT", ""), env.get("NGINX_TLS_KEY", "")
    if bool(cert_setting) != bool(key_setting):
        raise TlsError("set both NGINX_TLS_CERT and NGINX_TLS_KEY, or neither (a local CA's)")
    ca = None
    if cert_setting:
        certificate, key = _setting_path(cert_setting), _setting_path(key_setting)
    else:
        try:
            local = ensure_local_certificate(tls_dir(env_file))
        except LocalCaError as exc:
            raise TlsError(f"making the local certificate: {exc}") from None
        certificate, key, ca = local.certificate, local.key, local.ca
    fingerprint, ocsp = check_pair(certificate, key)
    return TlsEntry(mode, port, certificate, key, ca, fingerprint, ocsp)
