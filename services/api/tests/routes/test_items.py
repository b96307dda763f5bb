from typing import Any

import httpx
import pytest

from stack.testing.api import assert_problem, create_item, create_user


async def test_item_lifecycle(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    created = await create_item(client, owner, name="Lamp", price=12.5, description="Bright")
    assert created["owner_id"] == owner.id
    assert created["price"] == 12.5
    assert created["version"] == 1

    item_url = f"/items/{created['id']}"
    fetched = await client.get(item_url)
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert fetched.headers["etag"] == '"1"'

    patched = await client.patch(item_url, json={"price": 10}, headers=owner.auth)
    assert patched.status_code == 200
    assert patched.json()["price"] == 10
    assert patched.json()["name"] == "Lamp"
    assert patched.json()["version"] == 2
    assert patched.json()["updated_at"] > created["updated_at"]

    deleted = await client.delete(item_url, headers=owner.auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(await client.get(item_url), 404)
    assert_problem(await client.delete(item_url, headers=owner.auth), 404)


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
async def test_writes_need_a_valid_token(client: httpx.AsyncClient, method: str) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = "/items" if method == "POST" else f"/items/{item['id']}"
    body: dict[str, Any] = {"name": "x", "price": 1}
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic abc"}):
        response = await client.request(method, url, json=body, headers=headers)
        problem = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "wrong-token" not in problem["detail"]


async def test_only_the_owner_may_change_or_delete(client: httpx.AsyncClient) -> None:
    owner, other = await create_user(client), await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    assert_problem(await client.patch(url, json={"name": "mine"}, headers=other.auth), 403)
    assert_problem(await client.delete(url, headers=other.auth), 403)
    assert (await client.get(url)).json()["name"] == item["name"]


async def test_unknown_item_is_404_for_every_method(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    url = "/items/9223372036854775807"
    assert_problem(await client.get(url), 404)
    assert_problem(await client.patch(url, json={"name": "x"}, headers=owner.auth), 404)
    assert_problem(await client.delete(url, headers=owner.auth), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "price": 1}, "name"),
        ({"name": "x" * 201, "price": 1}, "name"),
        ({"name": "x", "price": -0.01}, "price"),
        ({"name": "x", "price": 1e13}, "price"),
        ({"name": "x", "price": "cheap"}, "price"),
        ({"name": "x", "price": 1.234}, "price"),
        ({"name": "x", "price": 1, "description": "d" * 2001}, "description"),
        ({"name": ["x"], "price": 1}, "name"),
        ({"price": 1}, "name"),
        ({"name": "x", "price": 1, "owner_id": 1}, "owner_id"),
    ],
)
async def test_invalid_item_bodies_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    owner = await create_user(client)
    problem = assert_problem(await client.post("/items", json=body, headers=owner.auth), 422)
    assert field in {error["field"] for error in problem["errors"]}


async def test_patch_rejects_nulls_and_unknown_fields(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    for body, field in (({"name": None}, "name"), ({"colour": "red"}, "colour")):
        problem = assert_problem(await client.patch(url, json=body, headers=owner.auth), 422)
        assert field in {error["field"] for error in problem["errors"]}
    assert (await client.get(url)).json() == item


async def test_non_numeric_and_out_of_range_ids_are_422(client: httpx.AsyncClient) -> None:
    for path in ("/items/abc", "/items/0", "/items/9223372036854775808", "/items/1.5"):
        problem = assert_problem(await client.get(path), 422)
        assert problem["errors"][0]["field"] == "item_id"
    # A traversal-shaped id matches no route: a plain 404 problem, never a file or a 500.
    assert_problem(await client.get("/items/..%2F..%2Fetc%2Fpasswd"), 404)


async def test_if_match_guards_against_lost_updates(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    first = await client.patch(url, json={"name": "a"}, headers={**owner.auth, "If-Match": '"1"'})
    assert first.status_code == 200
    assert first.headers["etag"] == '"2"'
    stale = await client.patch(url, json={"name": "b"}, headers={**owner.auth, "If-Match": '"1"'})
    assert_problem(stale, 412)
    assert (await client.get(url)).json()["name"] == "a"


async def test_list_items_filters_by_owner_and_pages(client: httpx.AsyncClient) -> None:
    owner, other = await create_user(client), await create_user(client)
    mine = [await create_item(client, owner, name=f"mine-{i}") for i in range(5)]
    await create_item(client, other)

    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"owner_id": owner.id, "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get("/items", params=params)).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [i["id"] for i in seen] == [i["id"] for i in mine]
    assert_problem(await client.get("/items", params={"limit": 101}), 422)
    assert_problem(await client.get("/items", params={"owner_id": "me"}), 422)


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nope"), 404)
    assert_problem(await client.put("/items"), 405)


async def test_reads_serialise_exactly_like_writes(client: httpx.AsyncClient) -> None:
    """GETs build their JSON from asyncpg rows, writes from ORM objects: the bytes must agree."""
    owner = await create_user(client)
    made = [
        await create_item(client, owner, name="Ünïcode ✓", price=0, description=""),
        await create_item(client, owner, name="x" * 200, price=9999999999.99),
    ]
    page = (await client.get("/items", params={"owner_id": owner.id})).json()
    assert page == {"data": made, "next_cursor": None}
    for item in made:
        for expected_cache in ("miss", "hit"):
            fetched = await client.get(f"/items/{item['id']}")
            assert fetched.headers["x-cache"] == expected_cache
            assert fetched.json() == item
            assert fetched.headers["etag"] == f'"{item["version"]}"'
