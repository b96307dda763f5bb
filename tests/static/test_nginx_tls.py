"""nginx's HTTPS entry: the real nginx (Debian's 1.22) with the stack's nginx.conf and a rendered
entry/, a local CA's certificate, stand-in replicas behind it, and the clients people use (curl,
openssl s_client, Python's ssl) in front.

Every promise of the plain entry holds over HTTPS too (request ids, problem+json errors, limits,
hidden internals, retries), and the TLS itself is modern: 1.2 and 1.3 only, forward-secret AEAD
ciphers, no session tickets, HSTS only where HTTPS is the only entry.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.config import nginx as render
from stack.procs import free_port
from stack.testing.nginx import (
    EchoUpstream,
    RunningNginx,
    assert_raw_problem,
    raw_request,
    run_nginx,
    throwaway_certificate,
)
from stack.testing.tls import (
    LEGACY_CLIENT,
    curl,
    handshake,
    permissive_server,
    presented_fingerprint,
)
from stack.tls import check_pair
from stack.tls.local_ca import LocalCertificate, ensure_local_certificate

GET = b"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[RunningNginx, EchoUpstream]]:
    with EchoUpstream() as upstream, run_nginx([upstream.address], https="serve") as nginx:
        yield nginx, upstream


def _ca(nginx: RunningNginx) -> Path:
    assert nginx.certificate is not None
    return nginx.certificate.ca


# --- HTTP/2 and what reaches a replica ---------------------------------------------------------


def test_curl_with_the_ca_gets_200_over_http2(edge: tuple[RunningNginx, EchoUpstream]) -> None:
    nginx, upstream = edge
    for host in ("localhost", "127.0.0.1"):
        answer = curl(f"https://{host}:{nginx.tls_port}/health/live", _ca(nginx))
        assert (answer.status, answer.http_version) == (200, "2")
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    seen = upstream.requests[-1]
    # A replica still speaks HTTP/1.1 with nginx, and learns the client's scheme.
    assert seen["version"] == "HTTP/1.1"
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-request-id"] == answer.headers["x-request-id"]
    # Nobody else's certificate: without the CA curl refuses the server.
    refused = subprocess.run(
        ["curl", "-sS", f"https://localhost:{nginx.tls_port}/health/live"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 60, refused.stderr  # CURLE_PEER_FAILED_VERIFICATION


def test_http11_over_tls_still_works(edge: tuple[RunningNginx, EchoUpstream]) -> None:
    nginx, _ = edge
    answer = curl(f"{nginx.https_url}/items", _ca(nginx), "--http1.1")
    assert (answer.status, answer.http_version) == (200, "1.1")


def test_a_callers_request_id_is_kept_over_http2(edge: tuple[RunningNginx, EchoUpstream]) -> None:
    nginx, upstream = edge
    answer = curl(f"{nginx.https_url}/items", _ca(nginx), "-H", "X-Request-ID: tls-id.1")
    assert answer.headers["x-request-id"] == "tls-id.1"
    assert upstream.requests[-1]["headers"]["x-request-id"] == "tls-id.1"
    forged = curl(f"{nginx.https_url}/items", _ca(nginx), "-H", 'X-Request-ID: a"b')
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["x-request-id"])


def test_security_headers_over_https_and_no_hsts_beside_plain_http(
    edge: tuple[RunningNginx, EchoUpstream],
) -> None:
    nginx, _ = edge
    answer = curl(f"{nginx.https_url}/items", _ca(nginx))
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert answer.headers["server"] == "nginx"
    # Plain HTTP serves the API too (NGINX_HTTP=serve): HSTS would send browsers away from it.
    assert "strict-transport-security" not in answer.headers
    status, headers, _, _ = nginx.request("GET", "/items")
    assert status == 200
    assert "strict-transport-security" not in headers


# --- problem+json, limits and hidden paths over HTTPS ------------------------------------------


@pytest.mark.parametrize("http", ["--http2", "--http1.1"])
def test_internal_paths_are_404_problems_over_https(
    edge: tuple[RunningNginx, EchoUpstream], http: str
) -> None:
    nginx, upstream = edge
    before = len(upstream.requests)
    for path in ("/metrics", "/health/ready", "/%6Detrics"):
        answer = curl(f"{nginx.https_url}{path}", _ca(nginx), http)
        assert answer.status == 404
        assert answer.headers["content-type"] == "application/problem+json"
        document = answer.json()
        assert document["status"] == 404
        assert document["request_id"] == answer.headers["x-request-id"]
    assert len(upstream.requests) == before


def test_body_over_1_mib_is_a_413_problem_over_http2(
    edge: tuple[RunningNginx, EchoUpstream], tmp_path: Path
) -> None:
    nginx, upstream = edge
    before = len(upstream.requests)
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    answer = curl(f"{nginx.https_url}/items", _ca(nginx), "--data-binary", f"@{big}")
    assert (answer.status, answer.http_version) == (413, "2")
    document = answer.json()
    assert (document["status"], document["instance"]) == (413, "/items")
    assert len(upstream.requests) == before


def test_raw_problems_over_tls(edge: tuple[RunningNginx, EchoUpstream]) -> None:
    nginx, _ = edge
    for request, status in [
        (b"GET /items HTTP/1.1\r\nNo colon\r\n\r\n", 400),
        (b"FOO /items HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        (b"GET /items HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST /items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    ]:
        assert_raw_problem(nginx.raw(request, tls=True), status)


def test_429_with_retry_after_over_https() -> None:
    with (
        EchoUpstream() as upstream,
        run_nginx([upstream.address], https="serve", rate="1r/m") as nginx,
    ):
        answers = [nginx.raw(GET.replace(b"{path}", b"/items"), tls=True) for _ in range(102)]
        assert [a.status for a in answers[:101]] == [200] * 101
        problem = assert_raw_problem(answers[101], 429)
        assert problem["instance"] == "/items"
        assert answers[101].headers["retry-after"] == "1"
        # One zone for both doors: plain HTTP from the same address is over the limit too.
        assert nginx.raw(GET.replace(b"{path}", b"/items")).status == 429


def test_502_problem_and_retries_over_https() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with run_nginx([dead], https="serve") as nginx:
        answer = curl(f"{nginx.https_url}/items/7?x=1", _ca(nginx))
        assert answer.status == 502
        assert answer.json()["instance"] == "/items/7"
    with (
        EchoUpstream() as healthy,
        run_nginx([dead, healthy.address], https="serve", max_fails=0) as nginx,
    ):
        # A refused connection is retried on the next replica, over HTTPS as over HTTP.
        for _ in range(4):
            assert curl(f"{nginx.https_url}/items", _ca(nginx)).status == 200


def test_plain_http_on_the_https_port_is_a_400_problem(
    edge: tuple[RunningNginx, EchoUpstream],
) -> None:
    nginx, upstream = edge
    assert nginx.tls_port is not None
    before = len(upstream.requests)
    answer = raw_request(nginx.tls_port, GET.replace(b"{path}", b"/items?token=x"))
    problem = assert_raw_problem(answer, 400)
    assert problem["detail"] == "This port speaks HTTPS only: send the request with https://."
    assert problem["instance"] == "/items"
    assert len(upstream.requests) == before
    # The generic detail stays for a malformed request on the plain port.
    plain = nginx.raw(b"GET /items HTTP/1.1\r\nNo colon\r\n\r\n")
    assert assert_raw_problem(plain, 400)["detail"].startswith("The request is not valid HTTP")


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
        answer = curl(f"{nginx.https_url}/items", _ca(nginx), "--location")
        assert answer.status == 200
        assert answer.headers["strict-transport-security"] == render.HSTS
        # Errors from HTTPS carry it too.
        assert (
            curl(f"{nginx.https_url}/metrics", _ca(nginx)).headers["strict-transport-security"]
            == render.HSTS
        )


def test_off_mode_opens_no_plain_port() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address], https="off") as nginx:
        with pytest.raises(ConnectionRefusedError):
            nginx.request("GET", "/items")
        answer = curl(f"{nginx.https_url}/items", _ca(nginx))
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
