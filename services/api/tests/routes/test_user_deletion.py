"""DELETE /users/{id}: cascading, own token only, caches cleared; If-Match on item deletion."""

import httpx

from stack.testing.api import assert_problem, create_item, create_user


async def test_deleting_a_user_deletes_its_items_and_their_cache_entries(
    client: httpx.AsyncClient,
) -> None:
    owner, other = await create_user(client), await create_user(client)
    items = [await create_item(client, owner, name=f"n{n}") for n in range(3)]
    theirs = await create_item(client, other)
    for item in items:
        await client.get(f"/items/{item['id']}")
        assert (await client.get(f"/items/{item['id']}")).headers["x-cache"] == "hit"

    response = await client.delete(f"/users/{owner.id}", headers=owner.auth)
    assert response.status_code == 204
    assert response.content == b""

    assert_problem(await client.get(f"/users/{owner.id}"), 404)
    for item in items:
        assert_problem(await client.get(f"/items/{item['id']}"), 404)
    assert (await client.get("/items", params={"owner_id": owner.id})).json()["data"] == []
    assert (await client.get(f"/items/{theirs['id']}")).status_code == 200
    # The token was the user's: it opens nothing any more.
    gone = await client.post("/items", json={"name": "x", "price": 1}, headers=owner.auth)
    assert_problem(gone, 401)


async def test_only_the_users_own_token_may_delete_it(client: httpx.AsyncClient) -> None:
    owner, other = await create_user(client), await create_user(client)
    assert_problem(await client.delete(f"/users/{owner.id}"), 401)
    bad = {"Authorization": "Bearer not-a-token"}
    assert_problem(await client.delete(f"/users/{owner.id}", headers=bad), 401)
    assert_problem(await client.delete(f"/users/{owner.id}", headers=other.auth), 403)
    assert (await client.get(f"/users/{owner.id}")).status_code == 200


async def test_a_user_without_items_is_deleted_too(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    assert (await client.delete(f"/users/{owner.id}", headers=owner.auth)).status_code == 204
    assert_problem(await client.get(f"/users/{owner.id}"), 404)


async def test_item_deletion_honours_if_match(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    assert (await client.patch(url, json={"name": "v2"}, headers=owner.auth)).status_code == 200
    stale = await client.delete(url, headers={**owner.auth, "If-Match": '"1"'})
    assert_problem(stale, 412)
    assert (await client.get(url)).status_code == 200
    current = await client.delete(url, headers={**owner.auth, "If-Match": '"2"'})
    assert current.status_code == 204
