"""Cache-aside for single items in Redis, failing open.

Race between a read that misses and a concurrent write (the classic stale re-fill):

    reader: miss ─ SELECT (old row) ──────────────────────── SET old  ← stale until TTL
    writer:              UPDATE ─ COMMIT ─ DEL

Every item has a generation counter beside its entry. A reader fetches the entry and the
generation in one round trip, reads PostgreSQL on a miss, and stores the row only if the
generation is still the one it saw (an atomic compare-and-set in a Lua script). A writer bumps
the generation and deletes the entry after its commit. So a reader that read before the commit
either stores before the DEL (which then removes it) or finds the generation moved and stores
nothing: the old row cannot outlive the write.

Redis down or slow costs at most one socket timeout: errors open a short bypass window during
which requests go straight to PostgreSQL, and every cache failure is counted, never raised.
"""

import logging
import time

from app.observability.metrics import AppMetrics
from app.redis_pipe import PipelinedRedis, RedisError, Script

logger = logging.getLogger("app.cache")

# KEYS[1] = entry, KEYS[2] = generation; ARGV = expected generation ("" when none), value, ttl.
_SET_IF_GENERATION = Script("""
local current = redis.call('GET', KEYS[2])
if (current or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
""")
# KEYS as above; ARGV[1] = the generation's TTL. One script, so atomic like MULTI/EXEC, and one
# command, so it cannot interleave with other requests' commands on the shared connection.
_BUMP_GENERATION = Script("""
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
""")
# The generation must outlive every in-flight reader; a day is far beyond any request.
_GENERATION_TTL_SECONDS = 86_400


class ItemCache:
    def __init__(
        self,
        redis: PipelinedRedis,
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

    @staticmethod
    def _keys(item_id: int) -> tuple[str, str]:
        return f"item:{item_id}", f"item:{item_id}:gen"

    def _available(self) -> bool:
        return time.monotonic() >= self._bypass_until

    def _failed(self, operation: str, exc: RedisError) -> None:
        self._bypass_until = time.monotonic() + self.retry_after_seconds
        logger.warning("cache %s failed: %s", operation, type(exc).__name__)

    async def get(self, item_id: int) -> tuple[bytes | None, str | None]:
        """Return (cached JSON or None, generation token for `fill`; None means don't fill)."""
        if not self._available():
            self.metrics.cache_error.inc()
            return None, None
        try:
            raw, generation = await self.redis.call("MGET", *self._keys(item_id))
        except RedisError as exc:
            self._failed("get", exc)
            self.metrics.cache_error.inc()
            return None, None
        if raw is not None:
            self.metrics.cache_hit.inc()
            return raw, None
        self.metrics.cache_miss.inc()
        return None, (generation or b"").decode()

    async def fill(self, item_id: int, generation: str, value: bytes) -> bool:
        if not self._available():
            return False
        try:
            stored = await self.redis.run(
                _SET_IF_GENERATION, self._keys(item_id), (generation, value, self.ttl_seconds)
            )
        except RedisError as exc:
            self._failed("fill", exc)
            return False
        return bool(stored)

    async def invalidate(self, item_id: int) -> None:
        """Call after the write has committed; see the module docstring for why."""
        try:
            await self.redis.run(_BUMP_GENERATION, self._keys(item_id), (_GENERATION_TTL_SECONDS,))
        except RedisError as exc:
            # Redis being down must not fail a committed write; the TTL bounds any staleness.
            self.metrics.cache_invalidation_errors.inc()
            self._failed("invalidate", exc)

    async def ping(self) -> None:
        await self.redis.call("PING")
