"""Emails go only to their owner: no listing of users, no email in another user's profile or in
a 409, and GET /users/me for the caller."""

import httpx

from stack.testing.api import assert_problem, create_user


async def test_users_are_not_listed(client: httpx.AsyncClient) -> None:
    await create_user(client)
    refused = await client.get("/users")
    assert_problem(refused, 405)
    assert refused.headers["allow"] == "POST"


async def test_a_profile_has_no_email_and_me_has_it(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    profile = await client.get(f"/users/{owner.id}")
    assert profile.status_code == 200
    assert set(profile.json()) == {"id", "name", "created_at"}
    me = await client.get("/users/me", headers=owner.auth)
    assert me.status_code == 200
    assert me.json()["id"] == owner.id
    assert me.json()["email"].endswith("@example.com")
    assert_problem(await client.get("/users/me"), 401)


async def test_a_taken_email_is_not_repeated_in_the_409(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    email = (await client.get("/users/me", headers=owner.auth)).json()["email"]
    taken = await client.post("/users", json={"email": email, "name": "again"})
    assert_problem(taken, 409)
    assert email.split("@")[0] not in taken.text
