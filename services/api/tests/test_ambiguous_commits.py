"""A write whose answer was lost may still have committed: the cache must not hide it.

When PostgreSQL hangs mid-COMMIT, the API gives up (503) and the transaction may apply later;
the invalidation that follows a successful commit never ran. Two guards keep that from serving
an old version: the API invalidates after a failed commit too, and a 412 (the client's version
is stale) clears the item's entry so the client's re-read comes from PostgreSQL.
"""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from stack.testing.api import assert_problem, create_item, create_user


async def _cached(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    await client.get(url)
    response = await client.get(url)
    assert response.headers["x-cache"] == "hit"
    body: dict[str, Any] = response.json()
    return body


async def test_a_commit_reported_failed_that_applied_leaves_no_stale_entry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    assert (await _cached(client, url))["version"] == 1

    real_commit = AsyncSession.commit

    async def commit_then_lose_the_answer(self: AsyncSession) -> None:
        await real_commit(self)
        raise OperationalError("COMMIT", None, ConnectionResetError("answer lost"))

    monkeypatch.setattr(AsyncSession, "commit", commit_then_lose_the_answer)
    response = await client.patch(url, json={"name": "applied"}, headers=owner.auth)
    monkeypatch.undo()
    assert_problem(response, 503)

    after = await client.get(url)
    assert after.headers["x-cache"] == "miss"
    assert (after.json()["version"], after.json()["name"]) == (2, "applied")


async def test_a_412_clears_a_stale_cache_entry(client: httpx.AsyncClient, app: FastAPI) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    assert (await _cached(client, url))["version"] == 1
    # A write that committed behind the cache's back (its invalidation never ran).
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE items SET version = 7, name = 'behind' WHERE id = :id"),
            {"id": item["id"]},
        )
    assert (await client.get(url)).json()["version"] == 1  # stale, as the premise says

    stale = await client.patch(url, json={"name": "x"}, headers={**owner.auth, "If-Match": '"1"'})
    assert "version 7" in assert_problem(stale, 412)["detail"]
    fresh = await client.get(url)
    assert (fresh.json()["version"], fresh.json()["name"]) == (7, "behind")
    assert fresh.headers["etag"] == '"7"'
