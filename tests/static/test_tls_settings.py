"""stack/tls: the certificate nginx will serve is checked, or made, before anything starts.

What `make up` runs first (`python3 -m stack.tls check`, both runners) and what the native runner
and Compose's `make up` build on: a missing, unreadable or wrong key or certificate is a message
naming the file and its setting, never a half-started stack.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stack.paths import REPO_ROOT
from stack.testing.nginx import throwaway_certificate
from stack.tls import TlsError, check_pair, prepare, system_resolver, tls_dir
from stack.tls.local_ca import ensure_local_certificate


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=True, timeout=30)


def _settings(tmp_path: Path, **values: str) -> tuple[dict[str, str], Path]:
    return dict(values), tmp_path / ".env"


def test_no_certificate_given_makes_a_local_ca_once(tmp_path: Path) -> None:
    env, env_file = _settings(tmp_path)
    first = prepare(env, env_file)
    assert first.ca == tmp_path / ".data" / "tls" / "ca.crt" == tls_dir(env_file) / "ca.crt"
    assert (first.http_mode, first.port, first.https_only, first.ocsp) == (
        "serve",
        8443,
        False,
        False,
    )
    for key in (first.key, tmp_path / ".data" / "tls" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.certificate.stat().st_mode) == 0o644
    # For localhost and 127.0.0.1, signed by the CA, for a server.
    text = subprocess.run(
        ["openssl", "x509", "-in", str(first.certificate), "-noout", "-text"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    assert "TLS Web Server Authentication" in text
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(first.ca), str(first.certificate)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    # Made once: the next start serves the same certificate from the same CA.
    again = prepare(env, env_file)
    assert (again.fingerprint, again.ca) == (first.fingerprint, first.ca)


def test_a_server_certificate_from_another_ca_is_made_again(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    made = ensure_local_certificate(folder)
    before = check_pair(made.certificate, made.key)[0]
    # The CA replaced (say, deleted by hand and made anew): the old leaf no longer verifies.
    (folder / "ca.key").unlink()
    remade = ensure_local_certificate(folder)
    assert check_pair(remade.certificate, remade.key)[0] != before


def test_your_own_certificate_is_used_as_given(tmp_path: Path) -> None:
    own = throwaway_certificate()
    relative = os.path.relpath(own.certificate, REPO_ROOT)
    env, env_file = _settings(
        tmp_path, NGINX_TLS_CERT=relative, NGINX_TLS_KEY=str(own.key), NGINX_HTTP="off",
        NGINX_TLS_PORT="9443",
    )  # fmt: skip
    entry = prepare(env, env_file)
    assert entry.certificate.resolve() == own.certificate.resolve()
    assert (entry.ca, entry.port, entry.https_only) == (None, 9443, True)
    assert not tls_dir(env_file).exists(), "no local CA is made when a certificate is given"


def _broken(tmp_path: Path, case: str) -> tuple[Path, Path]:
    own = throwaway_certificate()
    cert, key = own.certificate, own.key
    if case == "missing key":
        key = tmp_path / "nope.key"
    elif case == "missing certificate":
        cert = tmp_path / "nope.crt"
    elif case == "key is a directory":
        key = tmp_path
    elif case == "key is not a key":
        key = tmp_path / "garbage.key"
        key.write_text("not a key at all\n")
    elif case == "certificate is not a certificate":
        cert = tmp_path / "garbage.crt"
        cert.write_text("hello\n")
    elif case == "another certificate's key":
        key = ensure_local_certificate(tmp_path / "other").key
    elif case == "encrypted key":
        key = tmp_path / "encrypted.key"
        _openssl(tmp_path, "pkey", "-in", str(own.key), "-aes256", "-passout", "pass:x",
                 "-out", str(key))  # fmt: skip
    elif case == "expired certificate":
        cert = tmp_path / "expired.crt"
        # `openssl ca` is the tool that can date a certificate in the past (3.0's req cannot).
        (tmp_path / "index.txt").touch()
        (tmp_path / "serial").write_text("01\n")
        (tmp_path / "ca.cnf").write_text(
            "[ca]\ndefault_ca = local\n[local]\ndatabase = index.txt\nnew_certs_dir = .\n"
            "serial = serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n"
        )
        _openssl(tmp_path, "req", "-new", "-key", str(own.key), "-subj", "/CN=localhost",
                 "-out", "expired.csr")  # fmt: skip
        _openssl(tmp_path, "ca", "-batch", "-config", "ca.cnf", "-cert", str(own.ca),
                 "-keyfile", str(own.ca.with_name("ca.key")), "-in", "expired.csr",
                 "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
                 "-out", str(cert))  # fmt: skip
    return cert, key


BROKEN = {
    "missing key": r"private key .*nope\.key \(NGINX_TLS_KEY\) does not exist",
    "missing certificate": r"certificate .*nope\.crt \(NGINX_TLS_CERT\) does not exist",
    "key is a directory": r"\(NGINX_TLS_KEY\) is a directory",
    "key is not a key": r"\(NGINX_TLS_KEY\) is not an unencrypted PEM private key",
    "certificate is not a certificate": r"\(NGINX_TLS_CERT\) is not a PEM certificate",
    "another certificate's key": r"\(NGINX_TLS_KEY\) does not belong to the certificate",
    "encrypted key": r"\(NGINX_TLS_KEY\) is not an unencrypted PEM private key",
    "expired certificate": r"\(NGINX_TLS_CERT\) has expired",
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_bad_certificate_or_key_is_refused_with_its_reason(tmp_path: Path, case: str) -> None:
    cert, key = _broken(tmp_path, case)
    env, env_file = _settings(tmp_path, NGINX_TLS_CERT=str(cert), NGINX_TLS_KEY=str(key))
    with pytest.raises(TlsError, match=BROKEN[case]):
        prepare(env, env_file)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"NGINX_TLS_CERT": "/x.crt"}, "both NGINX_TLS_CERT and NGINX_TLS_KEY, or neither"),
        ({"NGINX_TLS_KEY": "/x.key"}, "both NGINX_TLS_CERT and NGINX_TLS_KEY, or neither"),
        ({"NGINX_HTTP": "both"}, "NGINX_HTTP must be one of serve, redirect, off"),
        ({"NGINX_TLS_PORT": "70000"}, "NGINX_TLS_PORT must be a TCP port"),
        ({"NGINX_TLS_PORT": "8080"}, "NGINX_TLS_PORT and NGINX_PORT are both 8080"),
    ],
)
def test_inconsistent_settings_are_refused(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    env, env_file = _settings(tmp_path, **settings)
    with pytest.raises(TlsError, match=message):
        prepare(env, env_file)
    assert not tls_dir(env_file).exists()


def test_the_check_command_says_why_and_exits_1(tmp_path: Path) -> None:
    """`python3 -m stack.tls check` with the system's python3, as the Makefile runs it."""
    env = {
        "PATH": os.environ["PATH"],
        "STACK_ENV_FILE": str(tmp_path / ".env"),
        "NGINX_TLS_CERT": str(throwaway_certificate().certificate),
        "NGINX_TLS_KEY": str(tmp_path / "missing.key"),
    }
    result = subprocess.run(
        ["python3", "-m", "stack.tls", "check"], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "missing.key (NGINX_TLS_KEY) does not exist; nothing was started" in result.stderr
    del env["NGINX_TLS_CERT"], env["NGINX_TLS_KEY"]
    result = subprocess.run(
        [sys.executable, "-m", "stack.tls", "check"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ca = tmp_path / ".data" / "tls" / "ca.crt"
    assert f"curl --cacert {ca} https://127.0.0.1:8443/health/live" in result.stdout


def test_compose_env_renders_entry_and_names_the_mounts(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "STACK_ENV_FILE": str(tmp_path / ".env"),
        "NGINX_HTTP": "redirect",
        "NGINX_TLS_PORT": "9443",
    }
    result = subprocess.run(
        ["python3", "-m", "stack.tls", "compose-env"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines()
    )
    folder = tmp_path / ".data" / "tls"
    assert exported["NGINX_TLS_CERT"] == str(folder / "server.crt")
    assert exported["NGINX_TLS_KEY"] == str(folder / "server.key")
    assert exported["NGINX_TLS_ENTRY"] == str(folder / "compose-entry")
    tls_conf = (folder / "compose-entry" / "tls.conf").read_text()
    assert "ssl_certificate /etc/nginx/tls/server.crt;" in tls_conf
    assert 'http "https://$redirect_host:9443$request_uri";' in tls_conf
    # Another mode, another digest: `make up` then recreates nginx.
    env["NGINX_HTTP"] = "serve"
    again = subprocess.run(
        ["python3", "-m", "stack.tls", "compose-env"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"NGINX_TLS_DIGEST={exported['NGINX_TLS_DIGEST']}" not in again


def test_the_system_resolver_is_read_from_resolv_conf(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nsearch lan\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n")
    assert system_resolver(resolv) == "10.0.0.2"
    resolv.write_text("nameserver fe80::1%eth0\n")
    assert system_resolver(resolv) == "[fe80::1]"
    resolv.write_text("")
    assert system_resolver(resolv) is None
    assert system_resolver(tmp_path / "none") is None
