"""HTTPS through the live stack, on both runners: the certificate `make up` made with its local
CA (no NGINX_TLS_CERT given), HTTP/2, old protocols and weak ciphers refused, and today's promises
of the plain entry on the encrypted one; and a bad key that stops `make up` before anything starts.

The whole TLS policy (tickets, stapling, redirect and off modes) is tested against the real nginx
binary in tests/static/test_nginx_tls.py; here it is the stack as `make up` runs it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from stack.compose import ComposeStack
from stack.engine import Engine
from stack.ephemeral import EphemeralStack
from stack.paths import REPO_ROOT
from stack.running import LiveStack
from stack.testing.api import assert_problem, new_item, new_user
from stack.testing.nginx import throwaway_certificate, tls_context
from stack.testing.tls import LEGACY_CLIENT, curl, handshake, presented_fingerprint
from stack.tls import check_pair

# nginx's own $request_id: 32 hex digits.
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def _tls_port(stack: LiveStack) -> int:
    port = urlsplit(stack.https).port
    assert port is not None, stack.https
    return port


def test_the_local_ca_is_made_and_its_certificate_served(live_stack: LiveStack) -> None:
    certificate = live_stack.ca.with_name("server.crt")
    fingerprint, _ = check_pair(certificate, live_stack.ca.with_name("server.key"))
    assert presented_fingerprint(_tls_port(live_stack)) == fingerprint


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_10_and_11_are_refused(live_stack: LiveStack, version: str) -> None:
    """By the server: LEGACY_CLIENT lifts the client's own floor (tests/static/test_nginx_tls.py
    shows the same client completing these handshakes with a permissive server)."""
    refused = handshake(_tls_port(live_stack), version, *LEGACY_CLIENT)
    assert not refused.ok, refused.output
    assert "alert protocol version" in refused.output


def test_a_weak_cipher_is_refused(live_stack: LiveStack) -> None:
    refused = handshake(
        _tls_port(live_stack), "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA@SECLEVEL=0"
    )
    assert not refused.ok, refused.output
    assert "handshake failure" in refused.output


def test_curl_with_the_ca_gets_200_over_http2(live_stack: LiveStack) -> None:
    answer = curl(f"{live_stack.https}/health/live", live_stack.ca, "--http2")
    assert (answer.status, answer.http_version) == (200, "2")
    assert GENERATED_ID.match(answer.headers["x-request-id"]), answer.headers
    # Both entries are open (NGINX_HTTP=serve): no HSTS, which would bind browsers to HTTPS.
    assert "strict-transport-security" not in answer.headers
    # A client's own request id goes through, as on the plain entry.
    own = curl(
        f"{live_stack.https}/health/live", live_stack.ca, "--http2", "-H", "X-Request-ID: e2e-tls-1"
    )
    assert own.headers["x-request-id"] == "e2e-tls-1"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        # The API's own problems, carried through nginx inside TLS.
        ("/items/987654321", 404),
        ("/items/0", 422),
        # nginx's own: internals stay hidden on the HTTPS entry too.
        ("/metrics", 404),
        ("/health/ready", 404),
    ],
)
def test_problems_come_over_tls(live_stack: LiveStack, path: str, status: int) -> None:
    answer = curl(f"{live_stack.https}{path}", live_stack.ca, "--http2")
    assert (answer.status, answer.http_version) == (status, "2"), answer.body[:300]
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == status
    assert body["request_id"] == answer.headers["x-request-id"]
    assert body["instance"] == path
    assert "nginx/" not in answer.body.decode()


def test_writes_and_reads_over_https(live_stack: LiveStack) -> None:
    """A user and an item made over HTTPS are read back over plain HTTP: one API behind both."""
    trusted = tls_context(live_stack.ca)
    with httpx.Client(base_url=live_stack.https, verify=trusted, timeout=10) as tls:
        user = new_user(tls)
        item = new_item(tls, user)
        assert_problem(tls.post("/items", json={"name": "x", "price": 1}), 401)
    with httpx.Client(base_url=live_stack.nginx, timeout=10) as plain:
        assert plain.get(f"/items/{item['id']}").json() == item


GENEROUS = """
[overall]
max_error_ratio = 0.01
min_throughput_ratio = 0.5
[groups.all]
routes = ["GET /items", "GET /items/{item_id}", "GET /users/{user_id}", "POST /users"]
p95_ms = 3000
p99_ms = 5000
"""


def _loadtest(stack: EphemeralStack, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m loadtest run` as `make loadtest HOST=https://...` runs it (a subprocess: Locust
    would monkeypatch this process with gevent)."""
    env = {k: v for k, v in stack.env.items() if not k.startswith(("LOADTEST_", "GRAFANA_"))}
    env |= {"LOADTEST_REPORTS_DIR": str(folder / "reports"), "LOADTEST_HOST": stack.https}
    (folder / "generous.toml").write_text(GENEROUS)
    return subprocess.run(
        [sys.executable, "-m", "loadtest", "run", "--users=6", "--spawn-rate=6", "--duration=8s",
         "--workers=1", "--items=60", "--owners=3", f"--thresholds={folder / 'generous.toml'}",
         "--reader-weight=1", "--writer-weight=0", "--careless-weight=0", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


NATIVE_LOADTEST = (
    "the load test from this machine's Python, its users on their own 127.x addresses; under "
    "Compose it runs in containers (test_loadtest.py)"
)


@pytest.mark.native_only(reason=NATIVE_LOADTEST)
def test_the_load_test_runs_over_https_trusting_the_local_ca(
    live_stack: EphemeralStack, tmp_path: Path
) -> None:
    run = _loadtest(live_stack, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    [folder] = (tmp_path / "reports").iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert results["verdict"] == "PASS"
    assert results["settings"]["host"] == live_stack.https
    assert results["settings"]["trusted CA"] == str(live_stack.ca)
    client = results["client"]
    # 6 users at 4 req/s for 8 s offer about 190; a busy machine answers fewer, never none.
    assert client["requests"] > 20
    assert client["failures"] == 0
    # Its users' connections still leave from their own addresses inside TLS (sources.py), so
    # nginx's per-address limit sees users, not one client.
    start, end = results["window"]["start"] - 1, results["window"]["end"] + 1
    addresses = set()
    for line in live_stack.log("nginx").splitlines():
        if '"remote_addr":"127.' in line and '"remote_addr":"127.0.0.1"' not in line:
            record = json.loads(line)
            if start <= datetime.fromisoformat(record["time"]).timestamp() <= end:
                addresses.add(record["remote_addr"])
                assert record["status"] != 429, record
    assert len(addresses) >= 6, addresses


@pytest.mark.native_only(reason=NATIVE_LOADTEST)
def test_the_load_test_refuses_a_certificate_it_cannot_trust(
    live_stack: EphemeralStack, tmp_path: Path
) -> None:
    """Another CA than the one that signed nginx's certificate: refused before any load."""
    other = throwaway_certificate().ca
    run = _loadtest(live_stack, tmp_path, f"--ca={other}")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in run.stdout + run.stderr
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def _broken_key(case: str, folder: Path) -> dict[str, str]:
    certificate = throwaway_certificate()
    key = {
        "missing key": folder / "missing.key",
        "not a key": folder / "garbage.key",
        "another certificate's key": certificate.ca.with_name("ca.key"),
    }[case]
    if case == "not a key":
        key.write_text("not a key at all\n")
    return {"NGINX_TLS_CERT": str(certificate.certificate), "NGINX_TLS_KEY": str(key)}


BROKEN = {
    "missing key": "(NGINX_TLS_KEY) does not exist",
    "not a key": "(NGINX_TLS_KEY) is not an unencrypted PEM private key",
    "another certificate's key": "(NGINX_TLS_KEY) does not belong to the certificate",
}


@pytest.mark.stack
@pytest.mark.parametrize("case", list(BROKEN))
@pytest.mark.parametrize("how", ["make up", "python -m stack.native up"])
def test_a_bad_key_stops_up_before_anything_starts(case: str, how: str) -> None:
    """`make up` (its `tls` step) and the native runner's own check, which `make up` reaches only
    after it: each refuses with the file, the setting and the reason, and starts nothing."""
    with tempfile.TemporaryDirectory(prefix="native-badkey-") as tmp:
        stack = EphemeralStack.prepare(Path(tmp), 1, **_broken_key(case, Path(tmp)))
        try:
            result = stack.make("up") if how == "make up" else stack.run("up", timeout=120)
            _assert_refused(result, case, said_nothing_started=how == "make up")
            assert not (stack.data_dir / "stack" / "run" / "supervisord.pid").exists()
            assert stack.leftovers() == []
            assert stack.listening_ports() == []
        finally:
            # Only if the check failed to stop it: leave nothing running.
            if stack.leftovers():
                stack.run("down")


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_bad_key_stops_compose_up_before_anything_starts(
    docker_engine: Engine, tmp_path: Path, case: str
) -> None:
    """`STACK=compose make up`: the same check before Compose is called, so no image is built
    and no container, network or volume of the project exists afterwards."""
    stack = ComposeStack.prepare(
        tmp_path, docker_engine.env, replicas=1, settings=_broken_key(case, tmp_path)
    )
    try:
        _assert_refused(stack.make("up", timeout=120), case, said_nothing_started=True)
        assert stack.leftovers() == []
    finally:
        if stack.leftovers():
            stack.make("clean", timeout=300)


def _assert_refused(
    result: subprocess.CompletedProcess[str], case: str, *, said_nothing_started: bool
) -> None:
    assert result.returncode != 0, result.stdout
    assert BROKEN[case] in result.stderr, result.stderr
    if said_nothing_started:
        assert "nothing was started" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
