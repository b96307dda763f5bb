"""nginx's HTTPS entry, the TLS itself: the real nginx (Debian's 1.22) with the stack's
nginx.conf and a rendered entry/, a local CA's certificate, and the clients people use (curl,
openssl s_client) in front. TLS 1.2 and 1.3 only, forward-secret AEAD ciphers, the configured
certificate, no session tickets, OCSP stapling only where a responder is named, and HSTS only where
HTTPS is the only entry (NGINX_HTTP redirect or off).

What the plain entry promises, over HTTPS, is tests/static/test_nginx_https.py; the `edge`
fixture is tests/static/conftest.py's.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from stack.config import nginx as render
from stack.procs import free_port
from stack.testing.nginx import EchoUpstream, RunningNginx, run_nginx, throwaway_certificate
from stack.testing.tls import (
    LEGACY_CLIENT,
    curl,
    handshake,
    permissive_server,
    presented_fingerprint,
)
from stack.tls import check_pair
from stack.tls.local_ca import LocalCertificate, ensure_local_certificate

# --- the TLS itself -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_10_and_11_are_refused_by_the_server(
    edge: tuple[RunningNginx, EchoUpstream], version: str
) -> None:
    nginx, _ = edge
    assert nginx.tls_port is not None
    refused = handshake(nginx.tls_port, version, *LEGACY_CLIENT)
    assert not refused.ok, refused.output
    assert "alert protocol version" in refused.output
    # The same client, the same certificate, a server that allows it: the handshake succeeds.
    with permissive_server(throwaway_certificate()) as legacy:
        accepted = handshake(legacy, version, *LEGACY_CLIENT)
    assert accepted.ok, accepted.output


@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-ECDSA-AES128-SHA",  # CBC with SHA-1
        "ECDHE-ECDSA-AES256-SHA384",  # CBC
        "ECDHE-ECDSA-AES128-CCM8",  # a truncated tag
    ],
)
def test_weak_ciphers_are_refused(edge: tuple[RunningNginx, EchoUpstream], cipher: str) -> None:
    nginx, _ = edge
    assert nginx.tls_port is not None
    refused = handshake(nginx.tls_port, "-tls1_2", "-cipher", f"{cipher}@SECLEVEL=0")
    assert not refused.ok, refused.output
    assert "handshake failure" in refused.output
    with permissive_server(throwaway_certificate()) as legacy:
        accepted = handshake(legacy, "-tls1_2", "-cipher", f"{cipher}@SECLEVEL=0")
    assert (accepted.ok, accepted.cipher) == (True, cipher), accepted.output


@pytest.mark.parametrize(("version", "protocol"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_12_and_13_with_forward_secret_aead(
    edge: tuple[RunningNginx, EchoUpstream], version: str, protocol: str
) -> None:
    nginx, _ = edge
    assert nginx.tls_port is not None
    hello = handshake(nginx.tls_port, version)
    assert (hello.ok, hello.protocol) == (True, protocol), hello.output
    assert re.fullmatch(
        r"(ECDHE-ECDSA-|TLS_)(AES_?\d+[-_]GCM|CHACHA20[-_]POLY1305)\S*", hello.cipher
    )


def test_the_certificate_presented_is_the_configured_one(
    edge: tuple[RunningNginx, EchoUpstream], tmp_path: Path
) -> None:
    nginx, _ = edge
    assert nginx.tls_port is not None
    assert nginx.certificate is not None
    configured, _ = check_pair(nginx.certificate.certificate, nginx.certificate.key)
    assert presented_fingerprint(nginx.tls_port) == configured
    # Another certificate configured, another one presented.
    other = ensure_local_certificate(tmp_path / "other")
    with run_nginx([f"127.0.0.1:{free_port()}"], https="serve", certificate=other) as second:
        assert second.tls_port is not None
        presented = presented_fingerprint(second.tls_port)
    assert presented == check_pair(other.certificate, other.key)[0] != configured


def test_no_session_tickets_but_resumption_from_the_cache(
    edge: tuple[RunningNginx, EchoUpstream], tmp_path: Path
) -> None:
    nginx, _ = edge
    assert nginx.tls_port is not None
    session = tmp_path / "session.pem"
    first = handshake(nginx.tls_port, "-tls1_2", "-sess_out", str(session), brief=False)
    assert first.ok, first.output
    assert "TLS session ticket:" not in first.output
    resumed = handshake(nginx.tls_port, "-tls1_2", "-sess_in", str(session), brief=False)
    assert resumed.ok, resumed.output
    assert "\nReused, TLSv1.2" in resumed.output


# --- NGINX_HTTP: redirect and off ----------------------------------------------------------------


def test_redirect_mode_sends_plain_http_to_https_with_hsts_there() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address], https="redirect") as nginx:
        for host in ("localhost:1", "evil.example", 'a"b'):
            status, headers, _, _ = nginx.request(
                "POST", "/items/3?q=1", body=b"{}", headers={"Host": host}
            )
            # 308 keeps the method and body; the host is never the client's unless it is ours.
            assert status == 308
            assert headers["location"] == f"https://localhost:{nginx.tls_port}/items/3?q=1"
            assert "strict-transport-security" not in headers
        assert upstream.requests == []
        # Internal paths stay hidden on the plain port, not redirected.
        assert nginx.request("GET", "/metrics")[0] == 404
        answer = curl(f"{nginx.https_url}/items", nginx.ca, "--location")
        assert answer.status == 200
        assert answer.headers["strict-transport-security"] == render.HSTS
        # Errors from HTTPS carry it too.
        assert (
            curl(f"{nginx.https_url}/metrics", nginx.ca).headers["strict-transport-security"]
            == render.HSTS
        )


def test_off_mode_opens_no_plain_port() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address], https="off") as nginx:
        with pytest.raises(ConnectionRefusedError):
            nginx.request("GET", "/items")
        answer = curl(f"{nginx.https_url}/items", nginx.ca)
        assert answer.status == 200
        assert answer.headers["strict-transport-security"] == render.HSTS
        listen = (nginx.prefix / "entry" / "listen.conf").read_text()
        assert f":{nginx.public_port}" not in listen


# --- OCSP stapling --------------------------------------------------------------------------------


def test_stapling_only_for_a_certificate_that_names_a_responder(tmp_path: Path) -> None:
    certificate = throwaway_certificate()
    plain = render.HttpsEntry(8443, 8443, str(certificate.certificate), str(certificate.key))
    assert check_pair(certificate.certificate, certificate.key)[1] is False
    render.render_compose_entry(tmp_path / "without", _compose(plain))
    assert "ssl_stapling" not in (tmp_path / "without" / "tls.conf").read_text()
    stapled = _compose(plain, ocsp_resolver=render.COMPOSE_RESOLVER)
    render.render_compose_entry(tmp_path / "with", stapled)
    text = (tmp_path / "with" / "tls.conf").read_text()
    assert "ssl_stapling on;\nssl_stapling_verify on;\nresolver 127.0.0.11 " in text


def test_a_certificate_with_an_ocsp_url_gets_stapling_and_one_without_logs_nothing(
    tmp_path: Path,
) -> None:
    """Stapling is configured for a certificate that names a responder (nginx asks it on the
    first handshake that wants a staple, in the background); one without gets no stapling
    directives, so nginx has nothing to warn about at start."""
    certificate = _certificate_with_ocsp(tmp_path, throwaway_certificate(), "http://127.0.0.1:9")
    fingerprint, has_ocsp = check_pair(certificate.certificate, certificate.key)
    assert has_ocsp
    with run_nginx([f"127.0.0.1:{free_port()}"], https="serve", certificate=certificate) as nginx:
        assert nginx.tls_port is not None
        tls_conf = (nginx.prefix / "entry" / "tls.conf").read_text()
        assert "ssl_stapling on;\nssl_stapling_verify on;\nresolver 127.0.0.1 " in tls_conf
        assert presented_fingerprint(nginx.tls_port) == fingerprint
        # The chain in the file lets nginx find the issuer it verifies answers with.
        assert "issuer certificate not found" not in nginx.error_log.read_text()
    with run_nginx([f"127.0.0.1:{free_port()}"], https="serve") as nginx:
        assert nginx.tls_port is not None
        assert "ssl_stapling" not in (nginx.prefix / "entry" / "tls.conf").read_text()
        stapled = handshake(nginx.tls_port, "-status", brief=False).output
        assert "OCSP response: no response sent" in stapled
        assert "stapl" not in nginx.error_log.read_text()


def _certificate_with_ocsp(tmp_path: Path, ca: LocalCertificate, url: str) -> LocalCertificate:
    """A localhost certificate from the test CA that names an OCSP responder; the file holds the
    chain (leaf, then CA), as NGINX_TLS_CERT should, so nginx can verify the responder's answer."""
    folder = tmp_path / "ocsp"
    folder.mkdir()
    extensions = folder / "ext.cnf"
    extensions.write_text(
        "[server]\nsubjectAltName = DNS:localhost\nextendedKeyUsage = serverAuth\n"
        f"authorityInfoAccess = OCSP;URI:{url}\n"
    )
    key, leaf = folder / "server.key", folder / "leaf.crt"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], capture_output=True, check=True, timeout=30, cwd=folder)

    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=localhost", "-keyout", str(key), "-out", "server.csr")  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca.ca), "-CAkey",
            str(ca.ca.with_name("ca.key")), "-set_serial", "0x51", "-days", "30",
            "-extfile", str(extensions), "-extensions", "server", "-out", str(leaf))  # fmt: skip
    chain = folder / "fullchain.crt"
    chain.write_text(leaf.read_text() + ca.ca.read_text())
    return LocalCertificate(ca.ca, chain, key)


def _compose(entry: render.HttpsEntry, ocsp_resolver: str | None = None) -> render.HttpsEntry:
    return render.HttpsEntry(
        render.COMPOSE_TLS_PORT,
        entry.public_port,
        render.COMPOSE_CERTIFICATE,
        render.COMPOSE_KEY,
        entry.http_mode,
        ocsp_resolver,
    )


def test_compose_entry_names_the_published_port_in_redirects(tmp_path: Path) -> None:
    for public, expected in ((9443, "https://$redirect_host:9443$request_uri"),
                             (443, "https://$redirect_host$request_uri")):  # fmt: skip
        entry = render.HttpsEntry(
            render.COMPOSE_TLS_PORT, public, render.COMPOSE_CERTIFICATE, render.COMPOSE_KEY,
            "redirect",
        )  # fmt: skip
        render.render_compose_entry(tmp_path, entry)
        text = (tmp_path / "tls.conf").read_text()
        assert f'http "{expected}";' in text
        # The 497 detail keys on the port nginx listens on inside its container.
        assert '"8443:" 1;' in text
    listen = (tmp_path / "listen.conf").read_text()
    assert listen.splitlines()[1:] == [
        "listen 8080 default_server;",
        "listen 8443 ssl default_server;",
        "http2 on;",
    ]


def test_entry_values_that_would_inject_config_are_refused() -> None:
    for bad in ("/a b.crt", "/x.crt; include /etc/passwd", "/x'.crt"):
        with pytest.raises(ValueError, match="plain"):
            render.HttpsEntry(8443, 8443, bad, "/k.pem")
    with pytest.raises(ValueError, match="http_mode"):
        render.HttpsEntry(8443, 8443, "/c.pem", "/k.pem", "both")
    with pytest.raises(ValueError, match="differ"):
        render.render_nginx(
            Path("/nonexistent"), ["127.0.0.1:1"], 8080, 8081,
            https=render.HttpsEntry(8080, 8080, "/c.pem", "/k.pem"),
        )  # fmt: skip
