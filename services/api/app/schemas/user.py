from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import StrictInput, Text
from app.schemas.email import Email


class UserCreate(StrictInput):
    email: Email
    name: Annotated[Text, Field(min_length=1, max_length=100)]


class UserProfile(BaseModel):
    """What anyone may see of a user: no email."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: datetime


class UserPublic(UserProfile):
    """What the user itself sees (GET /users/me)."""

    email: str


class UserCreated(UserPublic):
    token: str = Field(description="Bearer token for writes. Shown once; only its hash is kept.")
