import logging
import time

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from app.cache import ItemCache
from app.deps import AnonymousIdempotency, CacheDep, CurrentUser, SessionDep, UserId
from app.errors import ConflictError, ForbiddenError, NotFoundError, problem_responses
from app.models import Item, User
from app.schemas.user import UserCreate, UserCreated, UserProfile, UserPublic
from app.security import hash_token, new_token

router = APIRouter(prefix="/users", tags=["users"], responses=problem_responses(422, "default"))
logger = logging.getLogger("app.users")

# Deleting a user clears its items' cache entries one round trip each; past this budget (a hung
# Redis, thousands of items) the rest are left to expire by their TTL instead of holding the
# request up.
_INVALIDATION_BUDGET_SECONDS = 1.0


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserCreated,
    responses=problem_responses(
        400,
        408,
        409,
        415,
        s409="A user with this email exists, or the Idempotency-Key's first request is running",
    ),
)
async def create_user(
    body: UserCreate, session: SessionDep, idempotency: AnonymousIdempotency
) -> Response:
    if (replay := await idempotency.claim(session)) is not None:
        return replay
    token = new_token()
    # Addresses compare case-insensitively in practice; storing one form keeps UNIQUE honest.
    user = User(email=body.email.lower(), name=body.name, token_hash=hash_token(token))
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        # The address is not repeated: the answer should tell a prober no more than it must.
        raise ConflictError("A user with this email already exists.") from exc
    created = UserCreated(
        id=user.id, email=user.email, name=user.name, created_at=user.created_at, token=token
    )
    response = Response(
        created.model_dump_json().encode(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers={"Location": f"/users/{user.id}"},
    )
    # With a key, the answer (the token in it) is kept until the key expires: the one way a
    # client that lost it gets its token again (docs/reliability.md, "Idempotency-Key").
    await idempotency.store(session, response)
    await session.commit()
    return response


# Declared before /{user_id}, which would otherwise take "me" (and refuse it as an id).
@router.get(
    "/me",
    summary="The caller's own user, email included",
    responses=problem_responses(401),
)
async def get_me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


# /users/me is its own resource and allows only GET (and HEAD): without this, DELETE /users/me
# would fall through to DELETE /users/{user_id} and be a 422 for the id "me", not the 405 the
# OpenAPI document promises. Out of the document: it adds no operation, only refuses one.
@router.delete("/me", include_in_schema=False)
async def delete_me() -> None:
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED)


# Another user's profile has no email, and there is no listing of users: emails go only to their
# owner (issue 15 'User enumeration'; GET /users listed every address to anyone).
@router.get("/{user_id}", responses=problem_responses(404, s404="No such user"))
async def get_user(user_id: UserId, session: SessionDep) -> UserProfile:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"User {user_id} does not exist.")
    return UserProfile.model_validate(user)


async def _invalidate(cache: ItemCache, user_id: int, item_ids: list[int]) -> None:
    deadline = time.monotonic() + _INVALIDATION_BUDGET_SECONDS
    for done, item_id in enumerate(item_ids):
        if time.monotonic() > deadline:
            logger.warning(
                "cache invalidation budget spent",
                extra={"user_id": user_id, "left_to_ttl": len(item_ids) - done},
            )
            return
        await cache.invalidate(item_id)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete your own user and, with it, every item it owns",
    responses=problem_responses(401, 403, s403="The token belongs to another user"),
)
async def delete_user(
    user_id: UserId, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> Response:
    """Cascading, not forbidden: an account is deleted with everything it owns, as its owner
    would expect from "delete my account". Only the user's own token may do it."""
    if user.id != user_id:
        raise ForbiddenError("A token may delete only its own user.")
    # Lock the user row first: a concurrent POST /items checks its foreign key with FOR KEY SHARE
    # on this row, so it waits for this transaction and then fails (409) instead of adding an item
    # whose cache entry nobody would clear.
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    # The items go explicitly (ON DELETE CASCADE would too) to learn their ids for the cache.
    deleted = await session.scalars(delete(Item).where(Item.owner_id == user_id).returning(Item.id))
    item_ids = list(deleted)
    await session.execute(delete(User).where(User.id == user_id))
    try:
        await session.commit()
    finally:
        # After the commit, as for every write (app.cache), and also when it raised: a commit cut
        # off by a timeout may have applied.
        await _invalidate(cache, user_id, item_ids)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
