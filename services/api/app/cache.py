"""Cache-aside for single items in Redis (redis-py, hiredis parser), failing open.

Race between a read that misses and a concurrent write (the classic stale re-fill):

    reader: miss ─ SELECT (old row) ──────────────────────── SET old  ← stale until TTL
    writer:              UPDATE ─ COMMIT ─ DEL

Every item has a generation counter beside its entry. A reader fetches the entry and the
generation in one round trip (MGET), reads PostgreSQL on a miss, and stores the row only if the
generation is still the one it saw (an atomic compare-and-set in a Lua script). A writer bumps
the generation and deletes the entry after its commit. So a reader that read before the commit
either stores before the DEL (which then removes it) or finds the generation moved and stores
nothing: the old row cannot outlive the write.

Redis down or slow costs at most one socket timeout: errors open a short bypass window during
which requests go straight to PostgreSQL, and every cache failure is counted, never raised.
"""

import logging
import time
from typing import cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, RedisError

from app.config import Settings
from app.observability.metrics import AppMetrics

logger = logging.getLogger("app.cache")

# KEYS[1] = entry, KEYS[2] = generation; ARGV = expected generation ("" when none), value, ttl.
SET_IF_GENERATION = """
local current = redis.call('GET', KEYS[2])
if (current or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
# KEYS as above; ARGV[1] = the generation's TTL. A script, so the three commands are atomic.
_BUMP_GENERATION = """
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""
# The generation must outlive every in-flight reader; a day is far beyond any request.
_GENERATION_TTL_SECONDS = 86_400

# A request holds a connection for one round trip (well under a millisecond), so this bounds the
# cache commands one replica has in flight at once: twice what a replica sees under `make bench`,
# and across replicas far below Redis's maxclients (10,000). The pool opens connections as
# commands need them and keeps them.
REDIS_MAX_CONNECTIONS = 64


def create_redis(settings: Settings) -> Redis:
    """The process's one client: a bounded pool, no retries, short timeouts."""
    timeout = settings.redis_socket_timeout_seconds
    # A plain pool, not a BlockingConnectionPool: that one passes every checkout and release
    # through one asyncio.Condition and arms a timer per checkout, half again the CPU of a
    # command with 16 requests at once (measured). The price: a request that finds all 64
    # connections busy skips the cache instead of waiting (ItemCache counts it as an error).
    pool = ConnectionPool.from_url(
        settings.redis_dsn.get_secret_value(),
        max_connections=REDIS_MAX_CONNECTIONS,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # No retries: a retry doubles the time a dead Redis holds a request, and the cache is
        # optional (PostgreSQL has every answer). The error opens the bypass window instead.
        retry=Retry(NoBackoff(), retries=0),
        # No periodic PING: a connection the server closed (a restart, its idle timeout) is
        # caught when the pool hands it out (redis-py checks it for EOF and reconnects), and a
        # silently dead one costs one socket timeout whether a PING or the command finds out.
        health_check_interval=0,
        # Names the replica in CLIENT LIST, as application_name does in PostgreSQL.
        client_name=f"api:{settings.replica_name}",
    )
    return Redis.from_pool(pool)


class ItemCache:
    def __init__(
        self,
        redis: Redis,
        metrics: AppMetrics,
        *,
        ttl_seconds: int,
        retry_after_seconds: float,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.ttl_seconds = ttl_seconds
        self.retry_after_seconds = retry_after_seconds
        self._bypass_until = 0.0
        # EVALSHA, with SCRIPT LOAD and a retry when Redis answers NOSCRIPT (after a restart).
        self._set_if_generation = redis.register_script(SET_IF_GENERATION)
        self._bump_generation = redis.register_script(_BUMP_GENERATION)

    @staticmethod
    def _keys(item_id: int) -> tuple[str, str]:
        return f"item:{item_id}", f"item:{item_id}:gen"

    def _available(self) -> bool:
        return time.monotonic() >= self._bypass_until

    def _failed(self, operation: str, exc: RedisError) -> None:
        # Every connection busy says nothing about Redis's health: skip the cache for this
        # request only (and quietly: a burst would log a line per request).
        if isinstance(exc, MaxConnectionsError):
            return
        self._bypass_until = time.monotonic() + self.retry_after_seconds
        logger.warning("cache %s failed: %s", operation, type(exc).__name__)

    async def get(self, item_id: int) -> tuple[bytes | None, str | None]:
        """Return (cached JSON or None, generation token for `fill`; None means don't fill)."""
        if not self._available():
            self.metrics.cache_error.inc()
            return None, None
        try:
            # bytes: the client does not decode replies (decode_responses stays False).
            found = cast(list[bytes | None], await self.redis.mget(self._keys(item_id)))
        except RedisError as exc:
            self._failed("get", exc)
            self.metrics.cache_error.inc()
            return None, None
        raw, generation = found
        if raw is not None:
            self.metrics.cache_hit.inc()
            return raw, None
        self.metrics.cache_miss.inc()
        return None, (generation or b"").decode()

    async def fill(self, item_id: int, generation: str, value: bytes) -> bool:
        if not self._available():
            return False
        try:
            stored = await self._set_if_generation(
                keys=self._keys(item_id), args=(generation, value, self.ttl_seconds)
            )
        except RedisError as exc:
            self._failed("fill", exc)
            return False
        return bool(stored)

    async def invalidate(self, item_id: int) -> None:
        """Call after the write has committed; see the module docstring for why."""
        try:
            await self._bump_generation(keys=self._keys(item_id), args=(_GENERATION_TTL_SECONDS,))
        except RedisError as exc:
            # Redis being down must not fail a committed write; the TTL bounds any staleness.
            self.metrics.cache_invalidation_errors.inc()
            self._failed("invalidate", exc)

    async def ping(self) -> None:
        """Raises RedisError when Redis does not answer; ignores the bypass window."""
        await self.redis.ping()
