"""What the live stack exposes: listening sockets, unauthenticated data stores, tokens in logs,
security headers. (The static side, the repository and the Compose file, is
tests/static/test_secrets.py; what Compose publishes and its networks, test_compose_make_up.py.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from stack.ephemeral import EphemeralStack
from stack.running import LiveStack
from stack.servers import postgres_bindir
from stack.testing.api import assert_problem, new_item, new_user, wait_until_serving

LISTEN = "0A"


def _stack_pids(stack: EphemeralStack) -> set[int]:
    """supervisord and every process under it (redis and PostgreSQL rewrite their command lines,
    so the family tree is the reliable way to find them)."""
    root = int((stack.data_dir / "stack" / "run" / "supervisord.pid").read_text())
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family = {root}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    return family


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        except OSError:
            continue
    return inodes


def _listening(inodes: set[str]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket among these inodes, IPv4 and IPv6."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != LISTEN or inode not in inodes:
                continue
            address_hex, port_hex = local.split(":")
            assert len(address_hex) == width
            raw = bytes.fromhex(address_hex)
            if width == 8:
                address = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                # /proc prints IPv6 as four host-order 32-bit words.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                address = socket.inet_ntop(socket.AF_INET6, words)
            found.append((address, int(port_hex, 16)))
    return found


@pytest.mark.native_only(
    reason="Compose's services listen inside their containers; what the engine publishes on the "
    "host is test_compose_make_up.py's"
)
def test_every_listening_socket_of_the_stack_is_on_loopback(live_stack: LiveStack) -> None:
    """PostgreSQL and Redis above all, but nothing of the native stack listens beyond 127.0.0.1."""
    assert isinstance(live_stack, EphemeralStack)
    pids = _stack_pids(live_stack)
    assert len(pids) > 10, pids
    listening = _listening(_socket_inodes(pids))
    ports = {port for _, port in listening}
    topology = live_stack.topology
    for name in ("postgres", "redis", "nginx", "prometheus"):
        assert topology.ports[name] in ports, f"{name} not found among {listening}"
    assert set(topology.api_ports) <= ports
    beyond = [(address, port) for address, port in listening if address != "127.0.0.1"]
    assert beyond == []


def _redis(address: tuple[str, int], *commands: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(b"".join(commands))
        time.sleep(0.2)
        return conn.recv(4096)


def test_redis_refuses_clients_without_the_password(live_stack: LiveStack) -> None:
    address = live_stack.datastore("redis")
    assert _redis(address, b"PING\r\n").startswith(b"-NOAUTH")
    assert _redis(address, b"GET item:1\r\n").startswith(b"-NOAUTH")
    password = live_stack.secret("REDIS_PASSWORD")
    assert password
    # With it, the same connection works: the refusal above was the password, not the port.
    reply = _redis(address, f"AUTH {password}\r\n".encode(), b"PING\r\n")
    assert reply == b"+OK\r\n+PONG\r\n"


def test_postgres_refuses_clients_without_the_password(live_stack: LiveStack) -> None:
    psql = str(postgres_bindir() / "psql")
    host, port = live_stack.datastore("postgres")
    user = live_stack.secret("POSTGRES_USER")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    argv = [
        psql,
        "-h",
        host,
        "-p",
        str(port),
        "-U",
        user,
        "-d",
        "postgres",
        "-w",
        "-c",
        "SELECT 1",
    ]
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode != 0
    assert "password" in refused.stderr
    env["PGPASSWORD"] = live_stack.secret("POSTGRES_PASSWORD")
    allowed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert allowed.returncode == 0, allowed.stderr


def test_tokens_never_reach_the_logs(live_stack: LiveStack) -> None:
    """Valid, invalid and malformed tokens, on every kind of request, in no log of the stack."""
    wait_until_serving(live_stack.nginx)
    with httpx.Client(base_url=live_stack.nginx, timeout=10) as client:
        user = new_user(client)
        item = new_item(client, user)
        guessed = "guessed-" + "x" * 30
        client.get(f"/items/{item['id']}", headers=user.auth)
        client.patch(f"/items/{item['id']}", json={"name": "t"}, headers=user.auth)
        assert_problem(client.post("/items", json={}, headers=user.auth), 422)
        assert_problem(
            client.post("/items", json={"name": "x", "price": 1},
                        headers={"Authorization": f"Bearer {guessed}"}),
            401,
        )  # fmt: skip
        assert_problem(client.get("/nowhere", headers={"Authorization": f"Basic {guessed}"}), 404)
    time.sleep(1)  # log lines follow responses
    logs = live_stack.logs()
    assert {f"api-{r}" for r in range(1, live_stack.replicas + 1)} | {"nginx"} <= logs.keys()
    assert any(f"/items/{item['id']}" in text for text in logs.values()), "requests not logged"
    for name, text in logs.items():
        assert user.token not in text, name
        assert guessed not in text, name


@pytest.mark.parametrize("path", ["/items?limit=1", "/items/987654321", "/docs", "/nowhere"])
def test_security_headers_on_every_answer(live_stack: LiveStack, path: str) -> None:
    response = httpx.get(f"{live_stack.nginx}{path}", timeout=10)
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    # No versions for a scanner to match against known vulnerabilities.
    assert headers["server"] == "nginx"
    assert "x-powered-by" not in headers
    assert "uvicorn" not in str(headers).lower()
