"""One client address per simulated user when the target is this machine.

nginx limits requests per client address (limit_req keyed on $binary_remote_addr), as a public
entry should. A real service's users arrive from many addresses; Locust's all come from 127.0.0.1,
so without this a load test measures nginx's limiter instead of the stack. On Linux the whole of
127.0.0.0/8 is this machine, so every user binds its connections to its own 127.x.y.z: nginx sees
one client per user, as in production, and still stops any single user that goes over its limit.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any, cast

from geventhttpclient.client import HTTPClient, HTTPClientPool
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.url import URL

FIRST = ipaddress.IPv4Address("127.1.0.0")
PER_WORKER = 2**16  # addresses per worker process: 127.<1 + worker>.x.y
MAX_WORKERS = 254
_sequence = itertools.count(1)


def next_address(worker_index: int) -> str:
    """A loopback address no other user of any worker has: 127.1.0.1, 127.1.0.2, ..."""
    offset = (worker_index % MAX_WORKERS) * PER_WORKER + next(_sequence) % (PER_WORKER - 1)
    return str(FIRST + offset)


class _BoundConnectionPool(ConnectionPool):
    source_address = "127.0.0.1"

    def _create_tcp_socket(self, family: int, socktype: int, protocol: int) -> Any:
        sock = super()._create_tcp_socket(family, socktype, protocol)
        sock.bind((self.source_address, 0))
        return sock


class _BoundSSLConnectionPool(_BoundConnectionPool, SSLConnectionPool):
    """The same for https:// targets: bound TCP, then TLS on top (SSLConnectionPool)."""


_BOUND: dict[type[ConnectionPool], type[_BoundConnectionPool]] = {
    ConnectionPool: _BoundConnectionPool,
    SSLConnectionPool: _BoundSSLConnectionPool,
}


class SourceBoundClientPool(HTTPClientPool):
    """An HTTPClientPool whose connections leave from `source_address`."""

    def __init__(self, source_address: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_address = source_address

    def get_client(self, url: str | URL) -> HTTPClient:
        client = super().get_client(url)
        # geventhttpclient has no source-address option; its HTTPClient builds the connection
        # pool itself, so the pool's class is swapped for one that binds. geventhttpclient is
        # pinned in uv.lock, and tests/e2e/test_loadtest_report.py checks nginx saw the addresses.
        pool = client._connection_pool
        bound = _BOUND.get(type(pool))
        if bound is not None:
            pool.__class__ = bound
            cast(_BoundConnectionPool, pool).source_address = self.source_address
        return client
