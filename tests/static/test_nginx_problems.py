"""Every status nginx can answer by itself is an RFC 9457 problem, on both of its servers.

STATUSES is the audit: each status nginx can produce (its own HTTP core and the modules this
config uses, HTTP/1.x and HTTP/2, plain and over TLS), how a client provokes it, or why it cannot
here. The static test holds nginx.conf to it; the live tests provoke every one that can be
provoked for real, with the real nginx binary in front of stand-in replicas, on the plain port and
again inside TLS on the HTTPS one.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator

import pytest

from stack.paths import NGINX_DIR
from stack.procs import free_port
from stack.testing.nginx import (
    Answer,
    EchoUpstream,
    RunningNginx,
    assert_raw_problem,
    raw_request,
    run_nginx,
)

# status → how it is provoked (live, below) or why it cannot be here (static only).
STATUSES: dict[int, str] = {
    400: "malformed request line or header, no or two Host, CL+TE, bad chunk, TE with HTTP/1.0, "
    "raw UTF-8 in the target, a control byte in a forwarded header value",
    403: "the internal port from an address outside its allow list",
    404: "/metrics, /health/ready on the public port; any other path on the internal one",
    405: "a method the API cannot route (FOO, QUERY) and TRACE",
    411: "not here: only WebDAV's PUT and HTTP/2-3 need a length (kept for the day they do)",
    412: "If-Match or If-Unmodified-Since on nginx's own 200s (internal /healthz, /stub_status)",
    413: "a body over client_max_body_size (1 MiB), by Content-Length or chunked",
    414: "a request line over 8 KiB",
    416: "not here: nginx serves no ranges (no static files, proxied answers are not ranged)",
    421: "not here: HTTP/2 over TLS when Host picks a server with other TLS settings (one here)",
    429: "limit_req (rate) and limit_conn (requests in progress) per client address",
    431: "a header over 8 KiB or headers over 32 KiB (nginx's internal 494)",
    495: "not here: a bad client certificate; none is asked for (sent as 400)",
    496: "not here: no client certificate where one is required; none is (sent as 400)",
    497: "plain HTTP on the HTTPS port (sent as 400, with its own detail)",
    500: "not from a client: nginx's own failures (memory, a redirect cycle)",
    501: "a Transfer-Encoding other than chunked",
    502: "no replica accepts the connection or one answers garbage",
    503: "not here: limit_req and limit_conn answer 429, and no live replica is a 502",
    504: "a replica that does not answer within proxy_read_timeout (10 s)",
    505: "an HTTP version other than 1.0 and 1.1",
    507: "not here: only WebDAV writes",
}
# What nginx sends for its internal codes.
SENT_AS = {494: 431, 495: 400, 496: 400, 497: 400}
# Statuses nginx logs but never sends: 408 (a timeout closes the connection, nginx/nginx#489),
# 444 (`return 444` closes it, unused here), 499 (the client went away first).
NEVER_SENT = {408, 444, 499}


def _servers(text: str) -> list[str]:
    """The body of each `server { ... }` block, comments stripped."""
    text = re.sub(r"#[^\n]*", "", text)
    bodies = []
    for match in re.finditer(r"\bserver\s*\{", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        bodies.append(text[match.end() : end - 1])
    return bodies


def _error_pages(server: str) -> dict[int, tuple[int, str]]:
    """status → (status sent, target) from every error_page in the server block."""
    pages = {}
    for args in re.findall(r"^\s*error_page\s+([^;]+);", server, flags=re.MULTILINE):
        *codes, target = args.split()
        sent = int(codes.pop()[1:]) if codes[-1].startswith("=") else None
        for code in map(int, codes):
            pages[code] = (sent or code, target)
    return pages


def _problem_map(text: str) -> set[str]:
    block = re.search(r"map \$status \$problem \{(.*?)\n    \}", text, flags=re.DOTALL)
    assert block, "nginx.conf has no `map $status $problem`"
    return set(re.findall(r"^\s*(\w+)\s", block[1], flags=re.MULTILINE))


def test_every_status_nginx_can_produce_has_a_problem_page_on_every_server() -> None:
    text = (NGINX_DIR / "nginx.conf").read_text()
    servers = _servers(text)
    assert len(servers) == 2, "the public and the internal server"
    mapped = _problem_map(text)
    for server in servers:
        pages = _error_pages(server)
        produced = set(STATUSES) - {431} | set(SENT_AS)
        assert produced <= pages.keys(), sorted(produced - pages.keys())
        assert not NEVER_SENT & pages.keys(), "a page for a status nginx never sends misleads"
        for code in produced:
            sent, target = pages[code]
            assert sent == SENT_AS.get(code, code), (code, sent)
            assert target == "/.problem", (code, target)
            assert str(sent) in mapped, f"no problem for {sent} in `map $status $problem`"
        problem = re.search(r"location = /\.problem \{(.*?)\}", server, flags=re.DOTALL)
        assert problem, "no `location = /.problem` in a server"
        assert "internal;" in problem[1]
        assert "default_type application/problem+json;" in problem[1]
    assert mapped - {"default"} <= {str(code) for code in STATUSES}


def test_statuses_nginx_never_sends_are_not_in_the_audit() -> None:
    assert not NEVER_SENT & STATUSES.keys()


# --- live: every status that can be provoked for real ---------------------------------------

RAW = "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n"


def _get(path: str, headers: str = "") -> bytes:
    return RAW.format(path=path, headers=headers).encode("latin-1")


CHUNKED = "Transfer-Encoding: chunked\r\n"


def _post(headers: str, body: bytes = b"", version: str = "1.1") -> bytes:
    host = "Host: a\r\n" if version == "1.1" else ""
    return f"POST /items HTTP/{version}\r\n{host}{headers}\r\n".encode() + body


# name → (request bytes, internal port?, status)
PLAIN: dict[str, tuple[bytes, bool, int]] = {
    "400 bad header line": (_get("/items", "No colon here\r\n"), False, 400),
    "400 no Host": (b"GET /items HTTP/1.1\r\n\r\n", False, 400),
    "400 two Hosts": (_get("/items", "Host: other\r\n"), False, 400),
    "400 CL and TE": (_post(f"Content-Length: 4\r\n{CHUNKED}", b"0\r\n\r\n"), False, 400),
    "400 bad chunk size": (_post(CHUNKED, b"zz\r\n\r\n"), False, 400),
    "400 TE with HTTP/1.0": (_post(CHUNKED, b"0\r\n\r\n", "1.0"), False, 400),
    "400 raw UTF-8 in the path": (b"GET /it\xc3\xa9ms HTTP/1.1\r\nHost: a\r\n\r\n", False, 400),
    "400 on the internal port": (b"GET / HTTP/1.1\r\nNo colon\r\n\r\n", True, 400),
    "404 /metrics": (_get("/metrics"), False, 404),
    "404 internal": (_get("/anything"), True, 404),
    "405 FOO": (b"FOO /items HTTP/1.1\r\nHost: a\r\n\r\n", False, 405),
    "405 TRACE": (b"TRACE /items HTTP/1.1\r\nHost: a\r\n\r\n", False, 405),
    "405 TRACE internal": (b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", True, 405),
    "412 If-Match on /healthz": (_get("/healthz", 'If-Match: "x"\r\n'), True, 412),
    "412 If-Unmodified-Since on /stub_status": (
        _get("/stub_status", "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n"),
        True,
        412,
    ),
    "413 by Content-Length": (_post("Content-Length: 2000000\r\n"), False, 413),
    "413 internal": (_post("Content-Length: 2000000\r\n"), True, 413),
    "414": (_get("/items?q=" + "a" * 10_000), False, 414),
    "431 one huge header": (_get("/items", "X-Big: " + "a" * 9000 + "\r\n"), False, 431),
    "431 too many headers": (
        _get("/items", "".join(f"X-H{i}: {'v' * 1000}\r\n" for i in range(40))),
        False,
        431,
    ),
    "501 gzip, chunked": (_post("Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), False, 501),
    "505 HTTP/2.0": (b"GET /items HTTP/2.0\r\nHost: a\r\n\r\n", False, 505),
    "505 HTTP/9.9": (b"GET /items HTTP/9.9\r\nHost: a\r\n\r\n", True, 505),
}


def _check(answer: Answer, status: int) -> None:
    assert_raw_problem(answer, status)
    if status == 405:
        assert "GET" in answer.headers["allow"]
    if status == 429:
        assert answer.headers["retry-after"] == "1"


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[RunningNginx, EchoUpstream]]:
    with EchoUpstream() as upstream, run_nginx([upstream.address], https="serve") as nginx:
        yield nginx, upstream


# Every request on the plain port, and the public ones again inside TLS on the HTTPS port.
DOORS = [(name, "http") for name in PLAIN] + [
    (name, "https") for name, (_, internal, _) in PLAIN.items() if not internal
]


@pytest.mark.parametrize(("name", "door"), DOORS)
def test_status_is_a_problem(edge: tuple[RunningNginx, EchoUpstream], name: str, door: str) -> None:
    nginx, upstream = edge
    before = len(upstream.requests)
    request, internal, status = PLAIN[name]
    _check(nginx.raw(request, internal=internal, tls=door == "https"), status)
    assert len(upstream.requests) == before, "a refused request reached the replica"


def test_497_plain_http_on_the_https_port(edge: tuple[RunningNginx, EchoUpstream]) -> None:
    nginx, upstream = edge
    assert nginx.tls_port is not None
    before = len(upstream.requests)
    problem = assert_raw_problem(raw_request(nginx.tls_port, _get("/items")), 400)
    assert "HTTPS only" in problem["detail"]
    assert len(upstream.requests) == before


def test_every_provocable_status_is_provoked() -> None:
    provoked = {status for _, _, status in PLAIN.values()} | {403, 429, 497, 502, 504}
    static_only = {code for code, how in STATUSES.items() if how.startswith("not ")}
    assert provoked == set(STATUSES) - static_only - {494, 495, 496}


def test_403_on_the_internal_port() -> None:
    # Loopback taken out of the allow list: the test's own address is now an outsider.
    with (
        EchoUpstream() as upstream,
        run_nginx([upstream.address], replace={"allow 127.0.0.0/8;": ""}) as nginx,
    ):
        _check(nginx.raw(_get("/stub_status"), internal=True), 403)


def test_429_from_the_rate_and_from_requests_in_progress() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address], rate="1r/m") as nginx:
        answers = [nginx.raw(_get("/items")) for _ in range(102)]
        assert [a.status for a in answers[:101]] == [200] * 101
        _check(answers[101], 429)
    with (
        EchoUpstream() as upstream,
        run_nginx([upstream.address], conn_limit=1) as nginx,
        _slow_body(nginx.public_port),
    ):
        _check(nginx.raw(_get("/items")), 429)


@contextlib.contextmanager
def _slow_body(port: int) -> Iterator[None]:
    """A POST whose body never completes: one request in progress for the block's length."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /items HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabcd")
        time.sleep(0.3)  # nginx has read the header: the request counts from now on
        yield


def test_502_when_no_replica_answers() -> None:
    with run_nginx([f"127.0.0.1:{free_port()}"]) as nginx:
        _check(nginx.raw(_get("/items/7?x=%22")), 502)


def test_504_when_a_replica_hangs() -> None:
    # The real value (10 s) is asserted by _edit finding it; 1 s keeps the test short.
    with (
        EchoUpstream(delay=3) as upstream,
        run_nginx(
            [upstream.address], replace={"proxy_read_timeout 10s;": "proxy_read_timeout 1s;"}
        ) as nginx,
    ):
        started = time.monotonic()
        _check(nginx.raw(_get("/items")), 504)
        assert time.monotonic() - started < 2.5
