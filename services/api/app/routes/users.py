from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.deps import SessionDep, UserId
from app.errors import ConflictError, NotFoundError
from app.models import User
from app.schemas.common import DEFAULT_PAGE_SIZE, Page, PageCursor, PageLimit
from app.schemas.user import UserCreate, UserCreated, UserPublic
from app.security import hash_token, new_token

router = APIRouter(prefix="/users", tags=["users"])


@router.post("", status_code=status.HTTP_201_CREATED, responses={409: {"description": "Taken"}})
async def create_user(body: UserCreate, session: SessionDep, response: Response) -> UserCreated:
    token = new_token()
    # Addresses compare case-insensitively in practice; storing one form keeps UNIQUE honest.
    user = User(email=body.email.lower(), name=body.name, token_hash=hash_token(token))
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(f"A user with email {body.email.lower()} already exists.") from exc
    response.headers["Location"] = f"/users/{user.id}"
    return UserCreated(
        id=user.id, email=user.email, name=user.name, created_at=user.created_at, token=token
    )


@router.get("/{user_id}", responses={404: {"description": "No such user"}})
async def get_user(user_id: UserId, session: SessionDep) -> UserPublic:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"User {user_id} does not exist.")
    return UserPublic.model_validate(user)


@router.get("")
async def list_users(
    session: SessionDep,
    limit: Annotated[PageLimit, Query()] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[PageCursor, Query()] = None,
) -> Page[UserPublic]:
    query = select(User).order_by(User.id).limit(limit + 1)
    if cursor is not None:
        query = query.where(User.id > cursor)
    users = list(await session.scalars(query))
    has_more = len(users) > limit
    users = users[:limit]
    return Page[UserPublic](
        data=[UserPublic.model_validate(u) for u in users],
        next_cursor=users[-1].id if has_more else None,
    )
