"""app.idempotency: Idempotency-Key on the API's writes, against the real PostgreSQL."""

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.idempotency import Idempotency, delete_expired
from app.main import create_app
from app.models import IdempotencyKey, Item, User
from stack.paths import API_DIR
from stack.servers import Servers
from stack.testing.api import ApiUser, assert_problem, create_item, create_user
from stack.testing.asgi import MakeSettings, Serve

ITEM = {"name": "Kettle", "price": 20}


def new_key() -> str:
    return str(uuid.uuid4())


def keyed(owner: ApiUser | None, key: str) -> dict[str, str]:
    return {**(owner.auth if owner else {}), "Idempotency-Key": f'"{key}"'}


async def key_rows(app: FastAPI, key: str) -> list[IdempotencyKey]:
    async with app.state.session_factory() as session:
        return list(await session.scalars(select(IdempotencyKey).where(IdempotencyKey.key == key)))


async def items_of(app: FastAPI, owner: ApiUser) -> int:
    async with app.state.session_factory() as session:
        count = await session.scalar(select(func.count()).where(Item.owner_id == owner.id))
        return int(count or 0)


async def test_a_retry_replays_the_first_answer_and_writes_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, key = await create_user(client), new_key()
    first = await client.post("/items", json=ITEM, headers=keyed(owner, key))
    again = await client.post("/items", json=ITEM, headers=keyed(owner, key))
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    for header in ("location", "etag", "content-type"):
        assert again.headers[header] == first.headers[header]
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    # Each answer has its own request id: the replay is a new request, answered from storage.
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert await items_of(app, owner) == 1
    (row,) = await key_rows(app, key)
    assert (row.state, row.status) == ("done", 201)


async def test_the_same_key_with_another_body_is_a_422(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, key = await create_user(client), new_key()
    assert (await client.post("/items", json=ITEM, headers=keyed(owner, key))).status_code == 201
    other = await client.post("/items", json={**ITEM, "price": 21}, headers=keyed(owner, key))
    problem = assert_problem(other, 422)
    assert problem["type"].endswith("/idempotency-key-reused")
    # Another route is another request too.
    item_id = (await client.get(f"/items?owner_id={owner.id}")).json()["data"][0]["id"]
    patch = await client.patch(f"/items/{item_id}", json=ITEM, headers=keyed(owner, key))
    assert_problem(patch, 422)
    assert await items_of(app, owner) == 1


async def test_concurrent_retries_with_one_key_write_once(
    make_settings: MakeSettings, serve: Serve
) -> None:
    app = create_app(make_settings(db_pool_size=10))
    async with serve(app=app) as client:
        owner, key = await create_user(client), new_key()
        answers = await asyncio.gather(
            *(client.post("/items", json=ITEM, headers=keyed(owner, key)) for _ in range(10))
        )
        statuses = sorted(a.status_code for a in answers)

        assert set(statuses) <= {201, 409}, statuses
        created = [a for a in answers if a.status_code == 201]
        assert len([a for a in created if "idempotent-replayed" not in a.headers]) == 1
        assert {a.content for a in created} == {created[0].content}
        for refused in (a for a in answers if a.status_code == 409):
            assert assert_problem(refused, 409)["type"].endswith("/idempotency-key-in-use")
            assert refused.headers["retry-after"] == "1"
        assert await items_of(app, owner) == 1
        assert len(await key_rows(app, key)) == 1
        # Once the first has finished, a retry always gets its answer.
        late = await client.post("/items", json=ITEM, headers=keyed(owner, key))
        assert late.status_code == 201
        assert late.content == created[0].content


async def test_a_key_in_use_is_a_409_at_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    """The first request with the key still running, simulated by holding its lock elsewhere."""
    owner, key = await create_user(client), new_key()
    async with app.state.session_factory() as session:
        user = await session.scalar(select(User).where(User.id == owner.id))
        assert user is not None
        running = Idempotency(key, user.token_hash, "", 60)
        await session.execute(select(func.pg_advisory_xact_lock(running.lock_id())))
        refused = await client.post("/items", json=ITEM, headers=keyed(owner, key))
        assert_problem(refused, 409)
        assert refused.headers["retry-after"] == "1"
        await session.rollback()
    # The "first request" never committed: the retry runs as a first request.
    retried = await client.post("/items", json=ITEM, headers=keyed(owner, key))
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert await items_of(app, owner) == 1


async def test_keys_are_scoped_to_the_token(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice, bob, key = await create_user(client), await create_user(client), new_key()
    for_alice = await client.post("/items", json=ITEM, headers=keyed(alice, key))
    for_bob = await client.post("/items", json=ITEM, headers=keyed(bob, key))
    assert for_alice.status_code == for_bob.status_code == 201
    assert "idempotent-replayed" not in for_bob.headers
    assert for_alice.json()["id"] != for_bob.json()["id"]
    assert for_bob.json()["owner_id"] == bob.id
    assert len(await key_rows(app, key)) == 2


async def test_without_a_key_every_post_writes(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    first = await create_item(client, owner, **ITEM)
    second = await client.post("/items", json=ITEM, headers=owner.auth)
    assert second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert second.headers["location"] == f"/items/{second.json()['id']}"
    assert second.json()["id"] != first["id"]
    assert await items_of(app, owner) == 2


async def test_post_users_replays_the_same_user_and_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = new_key()
    body = {"email": f"idem-{key}@example.com", "name": "Idem"}
    first = await client.post("/users", json=body, headers=keyed(None, key))
    again = await client.post("/users", json=body, headers=keyed(None, key))
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    token = first.json()["token"]
    me = await client.post("/items", json=ITEM, headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 201
    # Without the key, the same body is what it always was: the email is taken.
    assert_problem(await client.post("/users", json=body), 409)
    (row,) = await key_rows(app, key)
    assert row.scope == "anonymous /users"


async def test_a_patch_retried_with_its_key_is_not_applied_twice(
    client: httpx.AsyncClient,
) -> None:
    owner, key = await create_user(client), new_key()
    item = await create_item(client, owner)
    url = f"/items/{item['id']}"
    headers = {**keyed(owner, key), "If-Match": '"1"'}
    first = await client.patch(url, json={"name": "Renamed"}, headers=headers)
    again = await client.patch(url, json={"name": "Renamed"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"] == '"2"'
    assert again.headers["idempotent-replayed"] == "true"
    assert (await client.get(url)).json()["version"] == 2
    # Without the key the same retry is refused by If-Match, as before.
    stale = await client.patch(
        url, json={"name": "Renamed"}, headers={**owner.auth, "If-Match": '"1"'}
    )
    assert_problem(stale, 412)


async def test_a_failed_write_keeps_no_key(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A 409 (a taken email) rolls the key back with the write: a retry runs again."""
    taken = await create_user(client)
    key = new_key()
    body = {"email": taken.email, "name": "Again"}
    for _ in range(2):
        assert_problem(await client.post("/users", json=body, headers=keyed(None, key)), 409)
    assert await key_rows(app, key) == []


@pytest.mark.parametrize(
    "header",
    [
        '""',
        "unquoted-key",
        '"' + "k" * 256 + '"',
        '"no closing quote',
        '"bad \\escape"',
        '"tab\tinside"',
        '"a" "b"',
    ],
)
async def test_a_malformed_key_is_a_422_naming_the_header(
    app: FastAPI, client: httpx.AsyncClient, header: str
) -> None:
    owner = await create_user(client)
    response = await client.post(
        "/items", json=ITEM, headers={**owner.auth, "Idempotency-Key": header}
    )
    problem = assert_problem(response, 422)
    assert [e["location"] for e in problem["errors"]] == ["header"]
    assert await items_of(app, owner) == 0


@pytest.mark.parametrize("header", ["", "  "])
async def test_an_empty_field_is_no_key(
    app: FastAPI, client: httpx.AsyncClient, header: str
) -> None:
    """nginx forwards no empty header, so behind it an empty key is indistinguishable from none;
    the API treats it the same way when reached directly."""
    owner = await create_user(client)
    for _ in range(2):
        response = await client.post(
            "/items", json=ITEM, headers={**owner.auth, "Idempotency-Key": header}
        )
        assert response.status_code == 201, response.text
        assert "idempotent-replayed" not in response.headers
    assert await items_of(app, owner) == 2


async def test_escaped_quotes_and_the_longest_key_are_accepted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await create_user(client)
    for header, key in (
        ('"say \\"hi\\" \\\\ bye"', 'say "hi" \\ bye'),
        ('"' + "k" * 255 + '"', "k" * 255),
    ):
        response = await client.post(
            "/items", json=ITEM, headers={**owner.auth, "Idempotency-Key": header}
        )
        assert response.status_code == 201, response.text
        assert len(await key_rows(app, key)) == 1


async def test_an_expired_key_is_a_new_request(make_settings: MakeSettings, serve: Serve) -> None:
    app = create_app(make_settings(idempotency_key_ttl_seconds=1))
    async with serve(app=app) as client:
        owner, key = await create_user(client), new_key()
        first = await client.post("/items", json=ITEM, headers=keyed(owner, key))
        async with app.state.session_factory() as session:
            await session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.key == key)
                .values(created_at=func.now() - timedelta(seconds=2))
            )
            await session.commit()
        # Expired, even with another body: the key is free again.
        second = await client.post("/items", json={**ITEM, "price": 5}, headers=keyed(owner, key))
        assert second.status_code == 201
        assert "idempotent-replayed" not in second.headers
        assert second.json()["id"] != first.json()["id"]
        assert len(await key_rows(app, key)) == 1


async def _age(app: FastAPI, keys: list[str], seconds: int) -> None:
    async with app.state.session_factory() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key.in_(keys))
            .values(created_at=func.now() - timedelta(seconds=seconds))
        )
        await session.commit()


async def test_cleanup_deletes_only_expired_keys_in_bounded_batches(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await create_user(client)
    old, fresh = [new_key() for _ in range(5)], [new_key() for _ in range(2)]
    for key in old + fresh:
        item = {**ITEM, "name": key}
        assert (
            await client.post("/items", json=item, headers=keyed(owner, key))
        ).status_code == 201
    await _age(app, old, 3 * 86400)
    await _age(app, fresh, 3600)
    async with app.state.session_factory() as session:
        # Other tests' old rows may be there too: the batch bound holds whatever they are.
        assert await delete_expired(session, ttl_seconds=86400, batch=2) == 2
        while await delete_expired(session, ttl_seconds=86400, batch=2):
            pass
    for key in old:
        assert await key_rows(app, key) == []
    for key in fresh:
        assert len(await key_rows(app, key)) == 1


async def test_each_replica_cleans_up_by_itself(make_settings: MakeSettings, serve: Serve) -> None:
    settings = make_settings(
        idempotency_key_ttl_seconds=60, idempotency_cleanup_interval_seconds=0.1
    )
    app = create_app(settings)
    async with serve(app=app) as client:
        owner, old, fresh = await create_user(client), new_key(), new_key()
        for key in (old, fresh):
            item = {**ITEM, "name": key}
            assert (
                await client.post("/items", json=item, headers=keyed(owner, key))
            ).status_code == 201
        await _age(app, [old], 120)
        for _ in range(100):
            if not await key_rows(app, old):
                break
            await asyncio.sleep(0.05)
        assert await key_rows(app, old) == []
        assert len(await key_rows(app, fresh)) == 1


def test_the_openapi_document_declares_the_header(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for path, method in (("/items", "post"), ("/items/{item_id}", "patch"), ("/users", "post")):
        (header,) = [p for p in paths[path][method]["parameters"] if p["name"] == "idempotency-key"]
        assert header["in"] == "header"
        assert header["required"] is False
        assert "409" in paths[path][method]["responses"]
    assert all(
        p["name"] != "idempotency-key"
        for p in paths["/items/{item_id}"]["delete"].get("parameters", [])
    )


def _alembic(database_url: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(API_DIR / "alembic.ini"), *args],
        cwd=API_DIR,
        env={**os.environ, "DATABASE_URL": database_url},
        check=True,
        capture_output=True,
        timeout=120,
    )


async def test_the_migration_goes_up_and_down(servers: Servers) -> None:
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(servers.database_url, isolation_level="AUTOCOMMIT")
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    tables = "SELECT to_regclass('idempotency_keys') IS NOT NULL"
    index = "SELECT to_regclass('ix_idempotency_keys_created_at') IS NOT NULL"
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        target = create_async_engine(url)
        try:
            _alembic(url, "upgrade", "head")
            async with target.connect() as connection:
                assert await connection.scalar(text(tables))
                assert await connection.scalar(text(index))
            _alembic(url, "downgrade", "-1")
            async with target.connect() as connection:
                assert not await connection.scalar(text(tables))
                assert await connection.scalar(text("SELECT to_regclass('items') IS NOT NULL"))
            _alembic(url, "upgrade", "head")
            async with target.connect() as connection:
                assert await connection.scalar(text(tables))
            # The migrations make exactly what the models declare (autogenerate finds nothing).
            _alembic(url, "check")
        finally:
            await target.dispose()
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
