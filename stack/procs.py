"""Ports and child processes: the few helpers every runner, test and benchmark needs."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from typing import Any

LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """`count` different free ports: all bound at once, so no two calls hand out the same one."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_block(size: int, avoid: frozenset[int] = frozenset()) -> int:
    """A base port whose next `size` ports are all free (replica i listens on base + i)."""
    for _ in range(50):
        base = free_port()
        if base + size > 65535 or avoid & set(range(base, base + size + 1)):
            continue
        try:
            for offset in range(1, size + 1):
                with socket.socket() as probe:
                    probe.bind((LOOPBACK, base + offset))
        except OSError:
            continue
        return base
    raise ServerError("no block of free ports")


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for_port(port: int, timeout: float = 15.0, host: str = LOOPBACK) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        time.sleep(0.05)
    raise ServerError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def stop_process(
    process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Ask a child to stop with `sig` (SIGQUIT: nginx's graceful stop); kill it after `timeout`."""
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
