"""services/nginx's config live: the real nginx binary (Debian's 1.22 here) on free loopback
ports in front of in-process echo upstreams, and what clients and replicas actually see.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from stack.config import nginx as render
from stack.procs import free_port
from stack.testing.nginx import NGINX, PROBLEM_KEYS, EchoUpstream, run_nginx

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def _problem(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert headers["content-type"].startswith("application/problem+json"), headers
    document: dict[str, Any] = json.loads(body)
    assert document.keys() >= PROBLEM_KEYS, document
    assert document["status"] == expected
    assert document["request_id"] == headers["x-request-id"]
    assert document["type"].startswith("https://")
    return document


def test_proxy_forwards_headers_and_sets_security_headers() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        status, headers, body, raw = nginx.request(
            "GET",
            "/items?limit=5",
            headers={"X-Forwarded-For": "203.0.113.9", "Host": "localhost:8443"},
        )
        assert status == 200, body
        seen = json.loads(body)
        request_id = headers["x-request-id"]
        assert GENERATED_ID.match(request_id)
        assert [name for name, _ in raw if name.lower() == "x-request-id"] == ["X-Request-ID"]
        assert seen["path"] == "/items?limit=5"
        assert seen["version"] == "HTTP/1.1"
        assert seen["headers"]["x-request-id"] == request_id
        # A client's X-Forwarded-For is forged by definition at the edge: replaced, not kept.
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert seen["headers"]["x-real-ip"] == "127.0.0.1"
        assert seen["headers"]["x-forwarded-proto"] == "http"
        # A Host naming this stack, with its port, goes through (test_nginx_hardening.py has the
        # others).
        assert seen["headers"]["host"] == "localhost:8443"
        assert seen["headers"]["x-forwarded-host"] == "localhost:8443"
        assert "connection" not in seen["headers"]
        assert headers["x-content-type-options"] == "nosniff"
        assert [v for k, v in raw if k.lower() == "x-frame-options"] == ["DENY"]
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert "server" not in headers or headers["server"] == "nginx"
        assert "retry-after" not in headers

        status, headers, _, _ = nginx.request("GET", "/docs")
        assert "https://cdn.jsdelivr.net" in headers["content-security-policy"]


def test_request_id_is_kept_when_safe_and_replaced_when_not() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        _, headers, body, _ = nginx.request("GET", "/", headers={"X-Request-ID": "client-id.42"})
        assert headers["x-request-id"] == "client-id.42"
        assert json.loads(body)["headers"]["x-request-id"] == "client-id.42"
        _, headers, body, _ = nginx.request("GET", "/", headers={"X-Request-ID": 'a"b' + "x" * 200})
        assert GENERATED_ID.match(headers["x-request-id"])
        assert json.loads(body)["headers"]["x-request-id"] == headers["x-request-id"]


def test_json_access_log_line() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        _, headers, _, _ = nginx.request("POST", "/users", body=b'{"name":"x"}')
        _, _, _, _ = nginx.request("GET", "/healthz", internal=True)
        _, _, _, _ = nginx.request("GET", "/metrics")
        lines = nginx.log_lines(at_least=2)
    # The internal port does not log (healthchecks and scrapes would drown the real traffic).
    # Each worker buffers its own lines, so the file's order is not the order of the requests.
    assert sorted(line["path"] for line in lines) == ["/metrics", "/users"], lines
    (entry,) = (line for line in lines if line["path"] == "/users")
    expected = {"time", "request_id", "method", "path", "status", "bytes", "request_time"}
    expected |= {"upstream_addr", "upstream_status", "upstream_response_time"}
    assert expected <= entry.keys()
    assert entry["request_id"] == headers["x-request-id"]
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/users", 200)
    assert entry["upstream_addr"] == upstream.address
    assert entry["upstream_status"] == "200"
    assert isinstance(entry["bytes"], int)
    assert isinstance(entry["request_time"], float | int)


def test_internal_paths_are_404_problems_and_never_reach_the_api() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        for path in (
            "/metrics",
            "/metrics/",
            "/%6Detrics",
            "//metrics",
            "/health/ready",
            "/health",
        ):
            status, headers, body, _ = nginx.request("GET", path)
            document = _problem(status, headers, body, 404)
            assert document["title"] == "Not Found"
        assert upstream.requests == []
        status, _, body, _ = nginx.request("GET", "/health/live")
        assert status == 200
        assert json.loads(body)["path"] == "/health/live"
        # stub_status belongs to the internal port only; on the public one it is just a path.
        status, _, body, _ = nginx.request("GET", "/stub_status")
        assert b"Active connections" not in body
        status, _, body, _ = nginx.request("GET", "/stub_status", internal=True)
        assert status == 200
        assert b"Active connections" in body


def test_body_over_limit_is_413_problem() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        status, headers, body, _ = nginx.request("POST", "/items", body=b"x" * (1024 * 1024 + 1))
        document = _problem(status, headers, body, 413)
        assert document["instance"] == "/items"
        assert upstream.requests == []
        status, _, _, _ = nginx.request("POST", "/items", body=b"x" * (512 * 1024))
        assert status == 200


def test_rate_limit_is_429_problem_with_retry_after() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address], rate="1r/m") as nginx:
        statuses = []
        for _ in range(110):
            status, headers, body, _ = nginx.request("GET", "/items")
            statuses.append(status)
        # One request plus the burst of 100 pass, then the limit answers.
        assert statuses[:101] == [200] * 101
        assert set(statuses[101:]) == {429}
        document = _problem(status, headers, body, 429)
        assert document["instance"] == "/items"
        assert headers["retry-after"] == "1"
        assert headers["x-content-type-options"] == "nosniff"
        assert len(upstream.requests) == 101


def test_upstream_down_is_502_problem() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with run_nginx([dead]) as nginx:
        status, headers, body, _ = nginx.request("GET", "/items/7?x=%22")
        document = _problem(status, headers, body, 502)
        assert document["instance"] == "/items/7"
        assert "retry-after" not in headers
        entry = nginx.log_lines()[-1]
        assert entry["status"] == 502
        assert entry["upstream_addr"] == dead


def test_failed_replica_is_skipped_for_idempotent_requests_only() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with (
        EchoUpstream() as healthy,
        EchoUpstream(status=502) as broken,
        # max_fails=0: no replica is ever taken out, so every request exercises retries.
        run_nginx([dead, broken.address, healthy.address], max_fails=0) as nginx,
    ):
        # A refused connection means no replica saw the request: retried even for POST.
        # A 502 from a replica that did see it: retried for GET, never for POST.
        for _ in range(6):
            assert nginx.request("GET", "/items")[0] == 200
        post_statuses = [nginx.request("POST", "/items", body=b"{}")[0] for _ in range(6)]
        assert set(post_statuses) <= {200, 502}
        assert 502 in post_statuses
        posts_seen = [r for r in broken.requests if r["method"] == "POST"]
        assert len(posts_seen) == post_statuses.count(502)
        assert all(r["method"] == "POST" for r in healthy.requests[6:])
        assert len(healthy.requests) == 6 + post_statuses.count(200)


def test_a_replicas_503_is_answered_as_is_and_takes_no_replica_out() -> None:
    """The API's 503 means PostgreSQL is down, for every replica alike: retrying it elsewhere
    would only multiply the load, and counting it as a failure would empty the pool."""
    with (
        EchoUpstream(status=503) as first,
        EchoUpstream(status=503) as second,
        run_nginx([first.address, second.address]) as nginx,
    ):
        statuses = [nginx.request("GET", "/items")[0] for _ in range(20)]
        assert statuses == [503] * 20
        # One try per request (no retry), and both replicas kept getting requests: with
        # max_fails=3, counting 503s would have taken them out and nginx would answer 502.
        assert len(first.requests) + len(second.requests) == 20
        assert len(first.requests) >= 5
        assert len(second.requests) >= 5


def test_internal_port_healthz_and_access_rules() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        status, _, body, _ = nginx.request("GET", "/healthz", internal=True)
        assert status == 200
        assert json.loads(body) == {"status": "ok"}
        status, _, _, _ = nginx.request("GET", "/anything", internal=True)
        assert status == 404
        assert upstream.requests == []


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name in parentheses may hold spaces; the parent pid follows it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def test_reload_through_nginx_command_swaps_workers() -> None:
    with EchoUpstream() as upstream, run_nginx([upstream.address]) as nginx:
        master = int((nginx.prefix / "nginx.pid").read_text())
        before = _children(master)
        assert before, "the master has no workers"
        reload = subprocess.run(
            render.nginx_command(nginx.prefix, nginx=NGINX, signal="reload"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert reload.returncode == 0, reload.stderr
        deadline = time.monotonic() + 5
        while _children(master) & before:
            assert time.monotonic() < deadline, "the old workers are still there after reload"
            time.sleep(0.05)
        assert _children(master)
        assert nginx.request("GET", "/items")[0] == 200
