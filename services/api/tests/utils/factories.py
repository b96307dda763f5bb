"""Factories that create data through the public API, as a client would."""

import uuid
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class UserWithToken:
    id: int
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


async def create_user(client: httpx.AsyncClient, **overrides: Any) -> UserWithToken:
    body = {"email": unique_email(), "name": "Test User", **overrides}
    response = await client.post("/users", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    return UserWithToken(id=data["id"], email=data["email"], token=data["token"])


async def create_item(
    client: httpx.AsyncClient, owner: UserWithToken, **overrides: Any
) -> dict[str, Any]:
    body = {"name": "Widget", "description": "A test item", "price": 9.99, **overrides}
    response = await client.post("/items", json=body, headers=owner.auth)
    assert response.status_code == 201, response.text
    item: dict[str, Any] = response.json()
    return item
