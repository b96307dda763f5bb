from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy import select

from app.deps import CacheDep, CurrentUser, ItemId, OwnedItem, SessionDep
from app.errors import NotFoundError, PreconditionFailedError
from app.models import Item
from app.schemas.common import DEFAULT_PAGE_SIZE, Page, PageCursor, PageLimit
from app.schemas.item import ItemCreate, ItemPublic, ItemUpdate

router = APIRouter(prefix="/items", tags=["items"])

JSON = "application/json"
_AUTH_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or invalid token"},
    403: {"description": "Not the item's owner"},
    404: {"description": "No such item"},
}


def _etag(version: int) -> str:
    return f'"{version}"'


def _item_json(item: Item) -> bytes:
    return ItemPublic.model_validate(item).model_dump_json().encode()


@router.post("", status_code=status.HTTP_201_CREATED, responses={401: _AUTH_ERRORS[401]})
async def create_item(
    body: ItemCreate, session: SessionDep, user: CurrentUser, response: Response
) -> ItemPublic:
    item = Item(**body.model_dump(), owner_id=user.id)
    session.add(item)
    await session.commit()
    response.headers["Location"] = f"/items/{item.id}"
    response.headers["ETag"] = _etag(item.version)
    return ItemPublic.model_validate(item)


@router.get("")
async def list_items(
    session: SessionDep,
    limit: Annotated[PageLimit, Query()] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[PageCursor, Query()] = None,
    owner_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Only this owner's")
    ] = None,
) -> Page[ItemPublic]:
    query = select(Item).order_by(Item.id).limit(limit + 1)
    if cursor is not None:
        query = query.where(Item.id > cursor)
    if owner_id is not None:
        query = query.where(Item.owner_id == owner_id)
    items = list(await session.scalars(query))
    has_more = len(items) > limit
    items = items[:limit]
    return Page[ItemPublic](
        data=[ItemPublic.model_validate(i) for i in items],
        next_cursor=items[-1].id if has_more else None,
    )


@router.get(
    "/{item_id}",
    response_model=ItemPublic,
    responses={404: _AUTH_ERRORS[404]},
)
async def get_item(item_id: ItemId, session: SessionDep, cache: CacheDep) -> Response:
    cached, generation = await cache.get(item_id)
    if cached is not None:
        version = orjson.loads(cached)["version"]
        return Response(cached, media_type=JSON, headers={"X-Cache": "hit", "ETag": _etag(version)})
    item = await session.get(Item, item_id)
    if item is None:
        raise NotFoundError(f"Item {item_id} does not exist.")
    body = _item_json(item)
    if generation is not None:
        await cache.fill(item_id, generation, body)
    return Response(body, media_type=JSON, headers={"X-Cache": "miss", "ETag": _etag(item.version)})


@router.patch(
    "/{item_id}",
    responses={**_AUTH_ERRORS, 412: {"description": "If-Match does not match the version"}},
)
async def update_item(
    body: ItemUpdate,
    item: OwnedItem,
    session: SessionDep,
    cache: CacheDep,
    response: Response,
    if_match: Annotated[
        str | None, Header(max_length=64, description="The ETag you last read")
    ] = None,
) -> ItemPublic:
    if if_match is not None and if_match.strip() not in ("*", _etag(item.version)):
        raise PreconditionFailedError(
            f"Item {item.id} is at version {item.version}; your If-Match was {if_match}."
        )
    for field, value in body.model_dump(exclude_unset=True).items():
        setattr(item, field, value)
    item.version += 1
    await session.commit()
    # After the commit, never before: see app.cache for the race this ordering closes.
    await cache.invalidate(item.id)
    response.headers["ETag"] = _etag(item.version)
    return ItemPublic.model_validate(item)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_AUTH_ERRORS)
async def delete_item(item: OwnedItem, session: SessionDep, cache: CacheDep) -> Response:
    item_id = item.id
    await session.delete(item)
    await session.commit()
    await cache.invalidate(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
