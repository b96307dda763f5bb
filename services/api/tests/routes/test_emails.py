"""Emails: one account per mailbox however it is spelled, no look-alikes, email-validator's
limits (the 64-character local part included)."""

import uuid

import httpx
import pytest

from stack.testing.api import assert_problem


async def _create(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/users", json={"email": email, "name": "n"})


@pytest.mark.parametrize(
    "template",
    [
        "mix{u}@ex\u0430mple.com",  # Cyrillic a in the domain
        "m\u0456x{u}@example.com",  # Cyrillic i in the local part
        "x{u}\u03bf@example.com",  # Greek omicron after Latin letters
        "{u}@\u0440aypal.com",  # Cyrillic er in a Latin label
        "{u}" + "a" * (65 - 32) + "@example.com",  # a 65-character local part
        "{u}@exa mple.com",
    ],
)
async def test_look_alike_or_oversized_emails_are_a_422(
    client: httpx.AsyncClient, template: str
) -> None:
    email = template.format(u=uuid.uuid4().hex)
    problem = assert_problem(await _create(client, email), 422)
    assert [e["field"] for e in problem["errors"]] == ["email"]


async def test_one_account_per_mailbox_however_it_is_cased(client: httpx.AsyncClient) -> None:
    local = uuid.uuid4().hex
    created = await _create(client, f"{local}@Example.COM")
    assert created.status_code == 201, created.text
    assert created.json()["email"] == f"{local}@example.com"
    assert_problem(await _create(client, f"{local.upper()}@example.com"), 409)


@pytest.mark.parametrize(
    "domain", ["b\u00fccher.de", "\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444"]
)
async def test_single_script_international_addresses_are_kept(
    client: httpx.AsyncClient, domain: str
) -> None:
    created = await _create(client, f"{uuid.uuid4().hex}@{domain}")
    assert created.status_code == 201, created.text
    assert created.json()["email"].endswith("@" + domain)
