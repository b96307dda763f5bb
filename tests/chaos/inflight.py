"""Requests a frozen process has been sent and not read, from the kernel's own TCP tables.

A process stopped with SIGSTOP reads nothing: a request sent to it stays in its socket's receive
queue (or, on a connection it has not accepted yet, in the listen backlog's socket). Counting
only the connections that come from nginx leaves out Prometheus's scrapes of the same port.
"""

from __future__ import annotations

import os
from pathlib import Path

ESTABLISHED = "01"


def _family_of(pid: int) -> list[int]:
    """The process and its children (nginx's master and its workers)."""
    family = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone since the listing
        if int(fields[1]) == pid:
            family.append(int(stat.parent.name))
    return family


def _socket_inodes(pids: list[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd) for fd in fds.iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    return inodes


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def _tcp_rows() -> list[tuple[int, int, str, int, str]]:
    """(local port, remote port, state, bytes unread, inode) of every IPv4 and IPv6 TCP socket."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            _, local, remote, state, queues, *_, inode = line.split()[:10]
            unread = int(queues.split(":")[1], 16)
            rows.append((_port(local), _port(remote), state, unread, inode))
    return rows


def unread_requests(sender_pid: int, port: int) -> int:
    """Connections from `sender_pid` (or a child of it) to `port` holding bytes unread there."""
    inodes = _socket_inodes(_family_of(sender_pid))
    rows = _tcp_rows()
    sender_ports = {local for local, remote, *_, ino in rows if remote == port and ino in inodes}
    return sum(
        1
        for local, remote, state, unread, _ in rows
        if local == port and remote in sender_ports and state == ESTABLISHED and unread > 0
    )
