"""Path ids have one spelling: digits, no sign, no leading zero, nothing around them."""

import httpx
import pytest

from stack.testing.api import assert_problem, create_item, create_user

SPELLINGS = ["0{id}", "+{id}", "{id}.0", "%20{id}", "{id}%20", "{id}_0", "1_{id}", "٣", "0x{id}"]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_non_canonical_item_id_is_a_422(client: httpx.AsyncClient, spelling: str) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = "/items/" + spelling.format(id=item["id"])
    problem = assert_problem(await client.get(url), 422)
    assert [(e["location"], e["field"]) for e in problem["errors"]] == [("path", "item_id")]
    assert_problem(await client.patch(url, json={"price": 1}, headers=owner.auth), 422)
    assert_problem(await client.delete(url, headers=owner.auth), 422)
    # The canonical spelling still finds it.
    assert (await client.get(f"/items/{item['id']}")).status_code == 200


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_non_canonical_user_id_is_a_422(client: httpx.AsyncClient, spelling: str) -> None:
    owner = await create_user(client)
    url = "/users/" + spelling.format(id=owner.id)
    assert_problem(await client.delete(url, headers=owner.auth), 422)
