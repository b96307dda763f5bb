"""Helpers that speak to the API as a client would, for every suite (ASGI, replica or nginx)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PROBLEM = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The one error shape, from the API or from nginx: RFC 9457 with the request id."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    # The request's path without the query: as the API decoded it, or as nginx saw it (raw),
    # which answers "/" for a request line it could not parse or a path it will not put in JSON.
    raw = response.request.url.raw_path.split(b"?", 1)[0].decode("ascii")
    assert body["instance"] in (response.request.url.path, raw, "/"), (body["instance"], raw)
    assert body["request_id"] == response.headers["x-request-id"]
    # Nothing internal leaks into an error, whoever wrote it.
    assert "Traceback" not in response.text
    assert "nginx/" not in response.text
    return body


@dataclass
class ApiUser:
    id: int
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def _user_body(overrides: dict[str, Any]) -> dict[str, Any]:
    return {"email": unique_email(), "name": "Test User", **overrides}


def _item_body(overrides: dict[str, Any]) -> dict[str, Any]:
    return {"name": "Widget", "description": "A test item", "price": 9.99, **overrides}


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _user(response: httpx.Response) -> ApiUser:
    data = _created(response)
    return ApiUser(id=data["id"], email=data["email"], token=data["token"])


def new_user(client: httpx.Client, **overrides: Any) -> ApiUser:
    return _user(client.post("/users", json=_user_body(overrides)))


def new_item(client: httpx.Client, owner: ApiUser, **overrides: Any) -> dict[str, Any]:
    return _created(client.post("/items", json=_item_body(overrides), headers=owner.auth))


async def create_user(client: httpx.AsyncClient, **overrides: Any) -> ApiUser:
    return _user(await client.post("/users", json=_user_body(overrides)))


async def create_item(
    client: httpx.AsyncClient, owner: ApiUser, **overrides: Any
) -> dict[str, Any]:
    return _created(await client.post("/items", json=_item_body(overrides), headers=owner.auth))


def wait_until_serving(base_url: str, timeout: float = 30) -> None:
    """Earlier modules stop and start replicas; nginx may still be routing around one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if all(
                httpx.get(f"{base_url}/health/live", timeout=5).status_code == 200 for _ in range(6)
            ):
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{base_url} is not serving"
        time.sleep(0.5)
