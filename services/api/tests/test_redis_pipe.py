"""The API's pipelined Redis client, against a real redis-server (redis-py checks its work)."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import uvloop
from redis.asyncio import Redis

from app.redis_pipe import (
    PipelinedRedis,
    RedisConnectionError,
    RedisReplyError,
    RedisTimeoutError,
    Script,
)
from stack.procs import free_port
from stack.servers import RedisServer, Servers


def _pipe(url: str, timeout: float = 1.0) -> PipelinedRedis:
    return PipelinedRedis.from_url(url, timeout=timeout, connect_timeout=1.0)


@pytest.fixture
async def client(servers: Servers) -> AsyncIterator[Redis]:
    redis = Redis.from_url(servers.redis_url, socket_timeout=1, socket_connect_timeout=1)
    try:
        yield redis
    finally:
        await redis.aclose()


def test_urls_name_server_credentials_and_database() -> None:
    pipe = _pipe("rediss://us%40r:p%3Ass@cache.internal:6380/3")
    assert (pipe.host, pipe.port, pipe.tls, pipe.db) == ("cache.internal", 6380, True, 3)
    assert (pipe.username, pipe.password) == ("us@r", "p:ss")
    plain = _pipe("redis://:secret@127.0.0.1")
    assert (plain.port, plain.db, plain.username, plain.password) == (6379, 0, None, "secret")
    with pytest.raises(ValueError, match="Redis URL"):
        _pipe("unix:///run/redis.sock")


async def test_reads_what_redis_py_wrote(servers: Servers, client: Redis) -> None:
    await client.set("pipe:a", b"\x00binary\r\nvalue")
    await client.delete("pipe:missing")
    pipe = _pipe(servers.redis_url)
    try:
        assert await pipe.call("MGET", "pipe:a", "pipe:missing") == [b"\x00binary\r\nvalue", None]
        assert await pipe.call("PING") == b"PONG"
        with pytest.raises(RedisReplyError):
            await pipe.call("NOSUCHCOMMAND")
        assert await pipe.call("GET", "pipe:a") == b"\x00binary\r\nvalue"  # still usable
    finally:
        await pipe.aclose()


async def test_concurrent_commands_share_one_connection_and_get_their_own_replies(
    servers: Servers, client: Redis
) -> None:
    await client.mset({f"pipe:n:{i}": str(i) for i in range(200)})
    before = {c["id"] for c in await client.client_list()}
    pipe = _pipe(servers.redis_url)
    try:
        replies = await asyncio.gather(*(pipe.call("MGET", f"pipe:n:{i}") for i in range(200)))
        assert replies == [[str(i).encode()] for i in range(200)]
        opened = [c for c in await client.client_list() if c["id"] not in before]
        assert [c["cmd"] for c in opened] == ["mget"]
    finally:
        await pipe.aclose()


async def test_scripts_run_by_sha_once_redis_has_seen_them(servers: Servers, client: Redis) -> None:
    script = Script(f"return ARGV[1] .. '{time.time_ns()}'")  # unknown to Redis so far
    pipe = _pipe(servers.redis_url)
    try:
        first = await pipe.run(script, (), ("x",))
        assert first.startswith(b"x")
        assert await client.script_exists(script.sha) == [True]
        assert await pipe.run(script, (), ("x",)) == first
    finally:
        await pipe.aclose()


def test_works_on_uvloop_like_the_server(servers: Servers) -> None:
    """`python -m app` runs uvloop, whose transports are not asyncio.Transport subclasses."""

    async def ping() -> object:
        pipe = _pipe(servers.redis_url)
        try:
            return await pipe.call("PING")
        finally:
            await pipe.aclose()

    assert uvloop.run(ping()) == b"PONG"


@pytest.fixture
def black_hole() -> Iterator[int]:
    """Accepts connections and never answers: a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen(64)
        yield listener.getsockname()[1]


async def test_a_hung_server_fails_every_waiting_command_within_the_timeout(
    black_hole: int,
) -> None:
    pipe = _pipe(f"redis://127.0.0.1:{black_hole}/0", timeout=0.2)
    try:
        start = time.monotonic()
        results = await asyncio.gather(*(pipe.call("GET", "k") for _ in range(20)),
                                       return_exceptions=True)  # fmt: skip
        assert time.monotonic() - start < 1.5
        assert all(isinstance(r, RedisTimeoutError | RedisConnectionError) for r in results)
    finally:
        await pipe.aclose()


async def test_refused_connection_is_a_redis_error() -> None:
    with pytest.raises(RedisConnectionError):
        await _pipe(f"redis://127.0.0.1:{free_port()}/0").call("PING")


async def test_authenticates_and_selects_the_database() -> None:
    server = RedisServer(free_port(), password="s3cret-pipe")
    server.start()
    try:
        redis = Redis.from_url(f"redis://:s3cret-pipe@127.0.0.1:{server.port}/3")
        await redis.set("pipe:db3", b"three")
        pipe = _pipe(f"redis://:s3cret-pipe@127.0.0.1:{server.port}/3")
        wrong = _pipe(f"redis://:wrong@127.0.0.1:{server.port}/3")
        try:
            assert await pipe.call("GET", "pipe:db3") == b"three"
            with pytest.raises(RedisReplyError):
                await wrong.call("GET", "pipe:db3")
        finally:
            await pipe.aclose()
            await wrong.aclose()
            await redis.aclose()
    finally:
        server.stop()


async def test_reconnects_after_the_server_restarts() -> None:
    server = RedisServer(free_port())
    server.start()
    pipe = _pipe(server.url)
    try:
        assert await pipe.call("SET", "pipe:r", "1") == b"OK"
        server.stop()
        with pytest.raises(RedisConnectionError):
            await pipe.call("GET", "pipe:r")
        server.start()
        assert await pipe.call("GET", "pipe:r") is None  # a fresh, empty server
    finally:
        await pipe.aclose()
        server.stop()
