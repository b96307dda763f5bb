"""How routes reach their collaborators: `Annotated` dependency aliases, and only these.

The collaborators live on `app.state` (made by the lifespan, app.main); this module is the only
code that reads it. Resolving a dependency costs FastAPI a few microseconds per request
(measured: README "Performance"), paid for one way of doing things that tests can override.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.cache import ItemCache
from app.database import Reader
from app.errors import ForbiddenError, NotFoundError, UnauthorizedError
from app.idempotency import (
    HEADER_DESCRIPTION,
    SF_STRING_PATTERN,
    Idempotency,
    fingerprint,
    parse_key,
)
from app.models import Item, User
from app.security import hash_token, tokens_match


# `async def` even where nothing is awaited: FastAPI runs a plain `def` dependency in its thread
# pool, a thread handoff per request for an attribute lookup.
async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.session_factory() as session:
        yield session


async def get_reader(request: Request) -> Reader:
    reader: Reader = request.app.state.reader
    return reader


async def get_cache(request: Request) -> ItemCache:
    cache: ItemCache = request.app.state.cache
    return cache


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


SessionDep = Annotated[AsyncSession, Depends(get_session)]
# For pure reads (app.database.Reader); anything that writes takes a session.
ReaderDep = Annotated[Reader, Depends(get_reader)]
CacheDep = Annotated[ItemCache, Depends(get_cache)]
# The engine itself, for what is neither a read nor a write: the readiness probe.
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]

# auto_error=False: a missing header must answer our 401 problem, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="The token returned by POST /users.")


async def get_current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthorizedError("Send 'Authorization: Bearer <token>'.")
    token = credentials.credentials
    if not token or len(token) > 256:
        raise UnauthorizedError("The token is not valid.")
    digest = hash_token(token)
    user = await session.scalar(select(User).where(User.token_hash == digest))
    # The index lookup already matched; the constant-time compare keeps that true if it changes.
    if user is None or not tokens_match(user.token_hash, token):
        raise UnauthorizedError("The token is not valid.")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def _canonical_id(value: object) -> object:
    """An id in a path is spelled one way: pydantic's lax int would take `01`, `+1`, ` 1`, `1.0`
    and `1_0` (item 10) too, so one resource had many URLs (and cache keys, and log paths)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and value[0] != "0"):
        raise ValueError("an id is a positive integer in canonical form: digits, no leading zero")
    return value


_CANONICAL_ID = BeforeValidator(_canonical_id)
ItemId = Annotated[int, _CANONICAL_ID, Path(ge=1, le=2**63 - 1, description="The item's id.")]
UserId = Annotated[int, _CANONICAL_ID, Path(ge=1, le=2**63 - 1, description="The user's id.")]


async def get_owned_item(item_id: ItemId, session: SessionDep, user: CurrentUser) -> Item:
    # FOR UPDATE: the version check and the write see the same row state.
    item = await session.scalar(select(Item).where(Item.id == item_id).with_for_update())
    if item is None:
        raise NotFoundError(f"Item {item_id} does not exist.")
    if item.owner_id != user.id:
        raise ForbiddenError(f"Item {item_id} belongs to another user.")
    return item


OwnedItem = Annotated[Item, Depends(get_owned_item)]


# Declared on every write that takes it, so the OpenAPI document (and schemathesis) knows it;
# a malformed key (empty, too long, not an RFC 8941 string) is a 422 naming the header.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        pattern=SF_STRING_PATTERN,
        description=HEADER_DESCRIPTION,
    ),
]


async def _idempotency(request: Request, header: str | None, scope: str) -> Idempotency:
    settings = request.app.state.settings
    key = parse_key(header)
    if key is None:
        # No key, nothing to compare: writes without one pay for no hashing.
        return Idempotency(None, scope, "", settings.idempotency_key_ttl_seconds)
    # FastAPI has read the body already (it is cached on the request): no second read.
    body = await request.body()
    return Idempotency(
        key,
        scope,
        fingerprint(request.method, request.url.path, body),
        settings.idempotency_key_ttl_seconds,
    )


async def get_user_idempotency(
    request: Request, user: CurrentUser, idempotency_key: IdempotencyKeyHeader = None
) -> Idempotency:
    # The token's SHA-256 is what the users table keeps: one scope per token.
    return await _idempotency(request, idempotency_key, user.token_hash)


async def get_anonymous_idempotency(
    request: Request, idempotency_key: IdempotencyKeyHeader = None
) -> Idempotency:
    # No token to scope by (POST /users creates the token): one shared scope per route.
    return await _idempotency(request, idempotency_key, f"anonymous {request.url.path}")


# For writes by a token's owner, and for POST /users, which anyone may call.
UserIdempotency = Annotated[Idempotency, Depends(get_user_idempotency)]
AnonymousIdempotency = Annotated[Idempotency, Depends(get_anonymous_idempotency)]
