"""The API's Redis client: one pipelined connection, shared by every request.

The API sends Redis a handful of commands (the cache's lookup, fill and invalidation scripts, a
health PING), so it does not carry redis-py. In this process redis-py cost more than FastAPI's
whole "hello" request per command (make bench, README "Performance"): each command borrowed a
connection from a pool under a lock, checked it for stray data and wrapped its write in
asyncio.wait_for, a new task per command on Python 3.11; and importing it added 14 MB to every
replica, the difference between meeting the 90 MB budget and not.

Redis answers the commands of one connection in the order it received them, so concurrent
requests can share one connection: commands are written as they come (those of one turn of the
event loop in one write), their futures wait in a FIFO, and the replies (parsed by hiredis)
resolve the futures in order. No lock, no pool, one timer per command. A command that times out
closes the connection, which fails every command queued behind it at once; the next command
reconnects. Multi-command atomicity is done with scripts (EVALSHA), never MULTI/EXEC, so no two
requests' commands can interleave inside a transaction.
"""

import asyncio
import hashlib
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self, cast
from urllib.parse import unquote, urlsplit

import hiredis

_NO_REPLY = object()


class RedisError(Exception):
    """Any failure talking to Redis; the cache catches this one and fails open."""


class RedisConnectionError(RedisError):
    pass


class RedisTimeoutError(RedisError):
    pass


class RedisReplyError(RedisError):
    """An error reply (`-ERR ...`, `-NOSCRIPT ...`); the connection is still fine."""


class _ProtocolError(RedisError):
    pass


@dataclass(frozen=True)
class Script:
    """A Lua script, run by its SHA1 once Redis has seen it (see PipelinedRedis.run)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        # Not a security use: Redis names cached scripts by this digest.
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(
            protocolError=_ProtocolError, replyError=RedisReplyError, notEnoughData=_NO_REPLY
        )
        # Futures of the commands written and not yet answered, oldest first.
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        # Commands sent during this turn of the event loop, written together at its end.
        self._unsent: list[bytes] = []
        # Kept: asyncio.get_running_loop() makes a getpid() system call every time.
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes) -> None:
        # Under load dozens of requests send their command in the same turn of the loop; one
        # write for all of them is one system call (and one wake-up of Redis) instead of dozens.
        # The wait is the rest of the current turn, nothing when idle.
        if not self._unsent:
            self.loop.call_soon(self._write)
        self._unsent.append(command)

    def _write(self) -> None:
        data = b"".join(self._unsent)
        self._unsent.clear()
        # A connection lost meanwhile has already failed these commands' futures.
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def usable(self) -> bool:
        """Connected and not closing: a command written now reaches Redis."""
        return self.transport is not None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not _NO_REPLY:
                if not self.waiting:
                    raise _ProtocolError("a reply nobody asked for")
                waiter = self.waiting.popleft()
                # Done already when it timed out or its request was cancelled: the reply still
                # has to be consumed to keep the rest in order.
                if waiter.done():
                    continue
                if isinstance(reply, RedisReplyError):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)
        except _ProtocolError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError("connection to Redis lost"))

    def close(self) -> None:
        # connection_lost follows and fails every command still waiting.
        if self.transport is not None:
            self.transport.close()


class PipelinedRedis:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        tls: bool = False,
        timeout: float,
        connect_timeout: float,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.username, self.password, self.db = username, password, db
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._protocol: _Protocol | None = None
        # Held only while (re)connecting, so concurrent requests open one connection, not many.
        self._connect_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, timeout: float, connect_timeout: float) -> Self:
        """redis://[[user]:password@]host[:port][/db], or rediss:// for TLS."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("the Redis URL must look like redis://[:password@]host[:port][/db]")
        path = parts.path.strip("/")
        return cls(
            parts.hostname,
            parts.port or 6379,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            db=int(path) if path else 0,
            tls=parts.scheme == "rediss",
            timeout=timeout,
            connect_timeout=connect_timeout,
        )

    async def call(self, *args: str | int | bytes) -> Any:
        """Send one command; its reply as hiredis parses it (bytes, int, list, None)."""
        return await self._command(await self._connection(), *args)

    async def run(
        self, script: Script, keys: tuple[str, ...], args: tuple[str | int | bytes, ...]
    ) -> Any:
        """EVALSHA, falling back to EVAL (which caches the script) when Redis does not know it."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", script.source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.usable():
            return protocol
        async with self._connect_lock:
            protocol = self._protocol
            if protocol is None or not protocol.usable():
                protocol = self._protocol = await self._connect()
        return protocol

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.tls else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    _Protocol, self.host, self.port, ssl=context
                )
        except TimeoutError:
            raise RedisTimeoutError("timeout connecting to Redis") from None
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        try:
            if self.password:
                credentials = (self.username, self.password) if self.username else (self.password,)
                await self._command(protocol, "AUTH", *credentials)
            if self.db:
                await self._command(protocol, "SELECT", self.db)
        except BaseException:
            protocol.close()
            raise
        return protocol

    async def _command(self, protocol: _Protocol, *args: str | int | bytes) -> Any:
        if not protocol.usable():
            raise RedisConnectionError("connection to Redis lost")
        waiter: asyncio.Future[Any] = protocol.loop.create_future()
        protocol.waiting.append(waiter)
        protocol.send(hiredis.pack_command(args))  # type: ignore[arg-type]
        timer = protocol.loop.call_later(self.timeout, _expire, waiter, protocol)
        try:
            return await waiter
        finally:
            timer.cancel()


def _expire(waiter: asyncio.Future[Any], protocol: _Protocol) -> None:
    if waiter.done():
        return
    waiter.set_exception(RedisTimeoutError("timeout reading from Redis"))
    # A server that stopped answering one command will not answer the ones queued behind it:
    # close, so they fail now instead of each waiting out its own timeout, and reconnect later.
    protocol.close()
