from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy import bindparam, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import ItemCache
from app.deps import (
    CacheDep,
    CurrentUser,
    ItemId,
    OwnedItem,
    ReaderDep,
    SessionDep,
    UserIdempotency,
)
from app.errors import NotFoundError, PreconditionFailedError, problem_responses
from app.models import Item
from app.schemas.common import DEFAULT_PAGE_SIZE, Page, PageCursor, PageLimit
from app.schemas.item import ItemCreate, ItemPublic, ItemUpdate

router = APIRouter(prefix="/items", tags=["items"], responses=problem_responses(422, "default"))

JSON = "application/json"
_AUTH_ERRORS = problem_responses(401, 403, 404, s403="Not the item's owner", s404="No such item")
# Routes that read a JSON body: unparseable (400), too slow to arrive (408) or not JSON (415).
_BODY_ERRORS = problem_responses(400, 408, 415)
# A write with an Idempotency-Key whose first request is still running.
_KEY_IN_USE = problem_responses(409, s409="The Idempotency-Key's first request is still running")
_IF_MATCH_DESCRIPTION = (
    "The ETag you last read. Optional: without it the write is unconditional (last writer wins); "
    "with it a newer version answers 412 instead of being overwritten."
)


def _etag(version: int) -> str:
    return f'"{version}"'


def _if_match_allows(if_match: str | None, version: int) -> bool:
    """RFC 9110 If-Match: `*` or a list of entity tags, compared strongly (W/ tags never match)."""
    if if_match is None:
        return True
    tags = {tag.strip() for tag in if_match.split(",")}
    return "*" in tags or _etag(version) in tags


def _item_json(item: Item | RowMapping) -> bytes:
    return ItemPublic.model_validate(item).model_dump_json().encode()


# The GETs are pure reads: Core statements that app.database.Reader runs outside a transaction.
_ITEM_BY_ID = select(Item).where(Item.id == bindparam("id"))
_ITEMS_PAGE = (
    select(Item).where(Item.id > bindparam("after")).order_by(Item.id).limit(bindparam("rows"))
)
_OWNER_ITEMS_PAGE = _ITEMS_PAGE.where(Item.owner_id == bindparam("owner_id"))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemPublic,
    responses={**_BODY_ERRORS, 401: _AUTH_ERRORS[401], **_KEY_IN_USE},
)
async def create_item(
    body: ItemCreate, session: SessionDep, user: CurrentUser, idempotency: UserIdempotency
) -> Response:
    if (replay := await idempotency.claim(session)) is not None:
        return replay
    item = Item(**body.model_dump(), owner_id=user.id)
    session.add(item)
    await session.flush()
    response = Response(
        _item_json(item),
        status_code=status.HTTP_201_CREATED,
        media_type=JSON,
        headers={"Location": f"/items/{item.id}", "ETag": _etag(item.version)},
    )
    # The answer is stored in the item's own transaction: both commit, or neither.
    await idempotency.store(session, response)
    await session.commit()
    return response


# The handlers return the JSON they built (response_model only documents it): FastAPI would
# otherwise validate the page it was handed a second time before serialising it.
@router.get("", response_model=Page[ItemPublic])
async def list_items(
    reader: ReaderDep,
    limit: Annotated[PageLimit, Query()] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[PageCursor, Query()] = None,
    owner_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Only this owner's")
    ] = None,
) -> Response:
    # Ids start at 1, so "after 0" is the first page.
    params = {"after": cursor or 0, "rows": limit + 1}
    if owner_id is None:
        rows = await reader.rows(_ITEMS_PAGE, params)
    else:
        rows = await reader.rows(_OWNER_ITEMS_PAGE, {**params, "owner_id": owner_id})
    has_more = len(rows) > limit
    rows = rows[:limit]
    # One validation of the whole page (in pydantic-core) instead of one call per item.
    page = Page[ItemPublic].model_validate(
        {"data": [dict(row) for row in rows], "next_cursor": rows[-1]["id"] if has_more else None}
    )
    return Response(page.model_dump_json(), media_type=JSON)


@router.get(
    "/{item_id}",
    response_model=ItemPublic,
    responses={404: _AUTH_ERRORS[404]},
)
async def get_item(item_id: ItemId, cache: CacheDep, reader: ReaderDep) -> Response:
    cached, generation = await cache.get(item_id)
    if cached is not None:
        version = orjson.loads(cached)["version"]
        return Response(cached, media_type=JSON, headers={"X-Cache": "hit", "ETag": _etag(version)})
    rows = await reader.rows(_ITEM_BY_ID, {"id": item_id})
    if not rows:
        raise NotFoundError(f"Item {item_id} does not exist.")
    row = rows[0]
    body = _item_json(row)
    if generation is not None:
        await cache.fill(item_id, generation, body)
    return Response(
        body, media_type=JSON, headers={"X-Cache": "miss", "ETag": _etag(row["version"])}
    )


async def _require_if_match(if_match: str | None, item: Item, cache: ItemCache) -> None:
    if _if_match_allows(if_match, item.version):
        return
    # The client saw an older version. If the cache served it (a write whose answer was lost can
    # commit after its invalidation, when PostgreSQL hung mid-COMMIT), clearing the entry makes
    # the client's re-read come from PostgreSQL instead of looping on 412 until the TTL.
    await cache.invalidate(item.id)
    raise PreconditionFailedError(
        f"Item {item.id} is at version {item.version}; your If-Match was {if_match}."
    )


async def _commit_and_invalidate(session: AsyncSession, cache: ItemCache, item_id: int) -> None:
    try:
        await session.commit()
    finally:
        # After the commit, never before: see app.cache for the race this ordering closes. Also
        # when the commit raised: cut off by a timeout or a lost connection, it may have applied.
        await cache.invalidate(item_id)


@router.patch(
    "/{item_id}",
    response_model=ItemPublic,
    responses={**_BODY_ERRORS, **_AUTH_ERRORS, **problem_responses(412), **_KEY_IN_USE},
)
async def update_item(
    body: ItemUpdate,
    item: OwnedItem,
    session: SessionDep,
    cache: CacheDep,
    idempotency: UserIdempotency,
    if_match: Annotated[
        str | None, Header(max_length=64, description=_IF_MATCH_DESCRIPTION)
    ] = None,
) -> Response:
    # A PATCH bumps the version, so a retried one is a second write: the key replays the first
    # answer before If-Match (which the first write made stale) is even looked at.
    if (replay := await idempotency.claim(session)) is not None:
        return replay
    # The row is locked (FOR UPDATE in OwnedItem) from this check to the commit, so two writers
    # holding the same ETag cannot both pass it: the second sees the first's version and gets 412.
    await _require_if_match(if_match, item, cache)
    for field, value in body.model_dump(exclude_unset=True).items():
        setattr(item, field, value)
    item.version += 1
    await session.flush()
    response = Response(_item_json(item), media_type=JSON, headers={"ETag": _etag(item.version)})
    await idempotency.store(session, response)
    await _commit_and_invalidate(session, cache, item.id)
    return response


@router.delete(
    "/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_AUTH_ERRORS, **problem_responses(412)},
)
async def delete_item(
    item: OwnedItem,
    session: SessionDep,
    cache: CacheDep,
    if_match: Annotated[
        str | None, Header(max_length=64, description=_IF_MATCH_DESCRIPTION)
    ] = None,
) -> Response:
    await _require_if_match(if_match, item, cache)
    item_id = item.id
    await session.delete(item)
    await _commit_and_invalidate(session, cache, item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
