"""`Idempotency-Key` (IETF draft "The Idempotency-Key HTTP Header Field"): a retried write
answers what the first one did, without writing twice.

A write that carries a key runs in one transaction that

1. takes a transaction-scoped advisory lock on (scope, key) without waiting: held by another
   transaction means the first request with this key is still running, a 409 at once (never a
   wait that holds a pool connection for as long as that request takes);
2. inserts the key's row (`in_progress`), or finds the row a finished request committed: the
   same fingerprint replays its stored answer, another one is a 422;
3. does the write, stores the answer in the row (`done`), and commits both together.

A replica killed at any point before the COMMIT leaves nothing: PostgreSQL rolls the transaction
back when the connection drops, the lock goes with it, and the retry runs as the first request
did. So no `in_progress` row is ever committed; the state column says what a row is while its
transaction runs. A request that fails (a 409, a 503) rolls back its key with its write: only
successful answers are replayed, and a failed request may be retried with its key.

Keys are scoped to the caller (the SHA-256 of its token; for POST /users, which needs no token,
one anonymous scope per route) and expire after IDEMPOTENCY_KEY_TTL_SECONDS: an expired row is
taken over by the next request with its key, and `delete_expired` removes them in bounded batches.
"""

import asyncio
import hashlib
import logging
import re
from datetime import timedelta

from fastapi import Response
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors.exceptions import ConflictError, ProblemError
from app.models.idempotency import DONE, IN_PROGRESS, IdempotencyKey

logger = logging.getLogger("app.idempotency")

REPLAYED_HEADER = "Idempotent-Replayed"
# RFC 8941 sf-string with at least one character: printable ASCII in double quotes, `"` and `\`
# escaped with `\`. The key is what is inside; 255 characters of it at most.
# An RFC 8941 sf-string holding 1-255 key characters (an escape pair is one), or nothing. The
# spaces or tabs around it are the field's OWS (RFC 9110 5.5), and an empty field is no key: nginx
# forwards no empty header, so a replica behind it can never tell an empty key from none. The
# document says so rather than promise refusals nobody could observe.
SF_STRING_PATTERN = r'^[ \t]*(?:"(?:[\x20\x21\x23-\x5B\x5D-\x7E]|\\["\\]){1,255}")?[ \t]*$'
_ESCAPE = re.compile(r'\\(["\\])')
HEADER_DESCRIPTION = (
    "Makes a retry of this write safe (IETF draft 'The Idempotency-Key HTTP Header Field'): an "
    'RFC 8941 string, e.g. "8e03978e-40d5-43e8-bc93-6894a57f9324", unique per write. A retry '
    "with the same key and body gets the first answer again (with Idempotent-Replayed: true) "
    "and writes nothing; the same key with another body is a 422; while the first request "
    "with the key is still running, 409."
)
# What a replay must repeat besides status and body; the rest (request id, ...) is per request.
_STORED_HEADERS = ("content-type", "location", "etag")
# Rows deleted per statement, and statements per cleanup round: each round is bounded.
CLEANUP_BATCH = 1000
CLEANUP_ROUNDS = 10


class IdempotencyKeyReusedError(ProblemError):
    status, title, slug = 422, "Unprocessable Entity", "idempotency-key-reused"


class IdempotencyKeyInUseError(ConflictError):
    slug = "idempotency-key-in-use"


def parse_key(header: str | None) -> str | None:
    """The key inside an sf-string the header's pattern has already accepted; an empty field is
    no key, as it is through nginx."""
    value = (header or "").strip(" \t")
    return _ESCAPE.sub(r"\1", value[1:-1]) if value else None


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


class Idempotency:
    """One request's key (or none), its scope and fingerprint; a no-op without a key."""

    def __init__(self, key: str | None, scope: str, request_fingerprint: str, ttl: int) -> None:
        self.key = key
        self.scope = scope
        self.fingerprint = request_fingerprint
        self.ttl = timedelta(seconds=ttl)
        self._row_id: int | None = None

    def lock_id(self) -> int:
        """The advisory lock's 64-bit id for (scope, key): who holds it is running the key."""
        digest = hashlib.sha256(f"{self.scope}\n{self.key}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    async def claim(self, session: AsyncSession) -> Response | None:
        """None: go ahead and write (then `store`). A Response: the stored answer to return."""
        if self.key is None:
            return None
        locked = await session.scalar(select(func.pg_try_advisory_xact_lock(self.lock_id())))
        if not locked:
            raise IdempotencyKeyInUseError(
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                headers={"Retry-After": "1"},
            )
        row = {"scope": self.scope, "key": self.key, "fingerprint": self.fingerprint}
        new = insert(IdempotencyKey).values(state=IN_PROGRESS, **row)
        # An expired row is the key's past: the request takes it over as if it were new.
        statement = new.on_conflict_do_update(
            index_elements=[IdempotencyKey.scope, IdempotencyKey.key],
            set_={
                "fingerprint": new.excluded.fingerprint,
                "state": IN_PROGRESS,
                "status": None,
                "headers": None,
                "body": None,
                "created_at": func.now(),
            },
            where=IdempotencyKey.created_at < func.now() - self.ttl,
        ).returning(IdempotencyKey.id)
        self._row_id = await session.scalar(statement)
        if self._row_id is not None:
            return None
        stored = (
            await session.execute(
                select(
                    IdempotencyKey.fingerprint,
                    IdempotencyKey.state,
                    IdempotencyKey.status,
                    IdempotencyKey.headers,
                    IdempotencyKey.body,
                ).where(IdempotencyKey.scope == self.scope, IdempotencyKey.key == self.key)
            )
        ).one()
        if stored.fingerprint != self.fingerprint:
            raise IdempotencyKeyReusedError(
                "This Idempotency-Key was used for a different request (method, path or body); "
                "use a new key for a new request."
            )
        if stored.state != DONE or stored.status is None:  # pragma: no cover - never committed
            raise IdempotencyKeyInUseError("The first request with this key did not finish.")
        headers = {**(stored.headers or {}), REPLAYED_HEADER: "true"}
        return Response(stored.body or b"", status_code=stored.status, headers=headers)

    async def store(self, session: AsyncSession, response: Response) -> None:
        """Keep `response` with the claimed key, in the write's transaction (commit follows)."""
        if self._row_id is None:
            return
        headers = {
            name: response.headers[name] for name in _STORED_HEADERS if name in response.headers
        }
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == self._row_id)
            .values(state=DONE, status=response.status_code, headers=headers, body=response.body)
        )


async def delete_expired(
    session: AsyncSession, ttl_seconds: int, batch: int = CLEANUP_BATCH
) -> int:
    """Delete up to `batch` of the oldest expired keys; how many went.

    The oldest first through the created_at index, and SKIP LOCKED: replicas cleaning at the same
    time take different rows instead of waiting on each other.
    """
    doomed = (
        select(IdempotencyKey.id)
        .where(IdempotencyKey.created_at < func.now() - timedelta(seconds=ttl_seconds))
        .order_by(IdempotencyKey.created_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    deleted = await session.scalars(
        delete(IdempotencyKey)
        .where(IdempotencyKey.id.in_(doomed.scalar_subquery()))
        .returning(IdempotencyKey.id)
    )
    count = len(deleted.all())
    await session.commit()
    return count


async def clean_expired_keys(
    session_factory: async_sessionmaker[AsyncSession], ttl_seconds: int, interval: float
) -> None:
    """Every `interval` seconds, at most CLEANUP_ROUNDS batches; runs until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            for _ in range(CLEANUP_ROUNDS):
                async with session_factory() as session:
                    if await delete_expired(session, ttl_seconds) < CLEANUP_BATCH:
                        break
        except Exception as exc:
            # The database away (or anything else): the next round tries again, as a background
            # task must not die of one failure; expired rows only take space meanwhile.
            logger.warning("idempotency key cleanup failed: %s", type(exc).__name__)
