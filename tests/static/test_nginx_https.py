"""nginx's HTTPS entry keeps every promise of the plain one: the real nginx (Debian's 1.22) with
the stack's nginx.conf and a rendered entry/, a local CA's certificate, stand-in replicas behind it
and curl or raw TLS in front. Request ids, security headers, problem+json errors, limits, hidden
internals and retries hold over HTTP/2 and HTTP/1.1 alike.

The TLS itself (protocols, ciphers, tickets, the plain port's modes, stapling) is
tests/static/test_nginx_tls.py; the `edge` fixture is tests/static/conftest.py's.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from stack.procs import free_port
from stack.testing.nginx import (
    EchoUpstream,
    RunningNginx,
    assert_raw_problem,
    raw_request,
    run_nginx,
)
from stack.testing.tls import curl

GET = b"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"


# --- HTTP/2 and what reaches a replica ---------------------------------------------------------


def test_curl_with_the_ca_gets_200_over_http2(edge: tuple[RunningNginx, EchoUpstream]) -> None:
    nginx, upstream = edge
    for host in ("localhost", "127.0.0.1"):
        answer = curl(f"https://{host}:{nginx.tls_port}/health/live", nginx.ca)
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
    answer = curl(f"{nginx.https_url}/items", nginx.ca, "--http1.1")
    assert (answer.status, answer.http_version) == (200, "1.1")


def test_a_callers_request_id_is_kept_over_http2(edge: tuple[RunningNginx, EchoUpstream]) -> None:
    nginx, upstream = edge
    answer = curl(f"{nginx.https_url}/items", nginx.ca, "-H", "X-Request-ID: tls-id.1")
    assert answer.headers["x-request-id"] == "tls-id.1"
    assert upstream.requests[-1]["headers"]["x-request-id"] == "tls-id.1"
    forged = curl(f"{nginx.https_url}/items", nginx.ca, "-H", 'X-Request-ID: a"b')
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["x-request-id"])


def test_security_headers_over_https_and_no_hsts_beside_plain_http(
    edge: tuple[RunningNginx, EchoUpstream],
) -> None:
    nginx, _ = edge
    answer = curl(f"{nginx.https_url}/items", nginx.ca)
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
        answer = curl(f"{nginx.https_url}{path}", nginx.ca, http)
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
    answer = curl(f"{nginx.https_url}/items", nginx.ca, "--data-binary", f"@{big}")
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
        answer = curl(f"{nginx.https_url}/items/7?x=1", nginx.ca)
        assert answer.status == 502
        assert answer.json()["instance"] == "/items/7"
    with (
        EchoUpstream() as healthy,
        run_nginx([dead, healthy.address], https="serve", max_fails=0) as nginx,
    ):
        # A refused connection is retried on the next replica, over HTTPS as over HTTP.
        for _ in range(4):
            assert curl(f"{nginx.https_url}/items", nginx.ca).status == 200


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
