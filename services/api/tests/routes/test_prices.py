"""One rule for prices, applied before storing: two decimal places at most, one form of zero,
and the answer to a write equal to what a later read returns."""

import httpx
import pytest

from stack.testing.api import assert_problem, create_user


@pytest.mark.parametrize(
    ("sent", "stored"), [(-0.0, "0.0"), (0, "0.0"), (12.5, "12.5"), (0.1, "0.1"), (7.99, "7.99")]
)
async def test_a_price_reads_back_as_it_was_answered(
    client: httpx.AsyncClient, sent: float, stored: str
) -> None:
    owner = await create_user(client)
    created = await client.post("/items", json={"name": "n", "price": sent}, headers=owner.auth)
    assert created.status_code == 201, created.text
    assert f'"price":{stored},' in created.text
    fetched = await client.get(created.headers["location"])
    assert fetched.json() == created.json()
    assert f'"price":{stored},' in fetched.text
    patched = await client.patch(
        created.headers["location"], json={"price": sent}, headers=owner.auth
    )
    assert f'"price":{stored},' in patched.text


@pytest.mark.parametrize("price", [12.505, 0.001, -0.01, 1e-7, 99999999999.99])
async def test_a_price_it_cannot_store_exactly_is_a_422(
    client: httpx.AsyncClient, price: float
) -> None:
    owner = await create_user(client)
    refused = await client.post("/items", json={"name": "n", "price": price}, headers=owner.auth)
    problem = assert_problem(refused, 422)
    assert [e["field"] for e in problem["errors"]] == ["price"]
