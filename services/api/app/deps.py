"""Request-scoped dependencies, as `Annotated` aliases the routes declare."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import ItemCache
from app.config import Settings
from app.database import Reader
from app.errors import ForbiddenError, NotFoundError, UnauthorizedError
from app.models import Item, User
from app.security import hash_token, tokens_match


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.session_factory() as session:
        yield session


def reader_of(request: Request) -> Reader:
    """For pure reads (app.database.Reader); anything that writes takes a session."""
    reader: Reader = request.app.state.reader
    return reader


def cache_of(request: Request) -> ItemCache:
    cache: ItemCache = request.app.state.cache
    return cache


# `async def` even where nothing is awaited: FastAPI runs a plain `def` dependency in its thread
# pool, a thread handoff per request for a dictionary lookup. The hottest reads call cache_of and
# reader_of on their `request` instead: resolving one Depends costs about a fifth of a whole
# "hello" request in this FastAPI (make bench).
async def get_cache(request: Request) -> ItemCache:
    return cache_of(request)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
CacheDep = Annotated[ItemCache, Depends(get_cache)]

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

ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The item's id.")]
UserId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The user's id.")]


async def get_owned_item(item_id: ItemId, session: SessionDep, user: CurrentUser) -> Item:
    # FOR UPDATE: the version check and the write see the same row state.
    item = await session.scalar(select(Item).where(Item.id == item_id).with_for_update())
    if item is None:
        raise NotFoundError(f"Item {item_id} does not exist.")
    if item.owner_id != user.id:
        raise ForbiddenError(f"Item {item_id} belongs to another user.")
    return item


OwnedItem = Annotated[Item, Depends(get_owned_item)]
