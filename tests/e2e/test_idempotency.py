"""Idempotency-Key through the edge, on either runner: nginx passes the key and the replay's
marker on, the stored answer is the same from every replica (it lives in PostgreSQL, not in a
replica), and concurrent retries through nginx write once. The API's own rules, one by one, are
services/api/tests/test_idempotency.py's; the retries of POSTs a killed replica cut off are the
chaos suite's (tests/chaos/test_retried_posts.py)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from stack.running import LiveStack
from stack.testing.api import ApiUser, assert_problem, new_user

ITEM = {"name": "Kept once", "description": "retried", "price": 3.5}
# The headers the replay must carry as the first answer did.
STORED = ("location", "etag", "content-type")


def _keyed(owner: ApiUser, key: str) -> dict[str, str]:
    # The draft's form: a Structured Field string.
    return {**owner.auth, "Idempotency-Key": f'"{key}"'}


def _owned(client: httpx.Client, owner: ApiUser) -> list[dict[str, Any]]:
    page = client.get("/items", params={"owner_id": owner.id, "limit": 100})
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["data"]
    return items


def test_a_keyed_retry_gets_the_stored_answer_from_every_replica(live_stack: LiveStack) -> None:
    key = uuid.uuid4().hex
    with httpx.Client(base_url=live_stack.nginx, timeout=10) as edge:
        owner = new_user(edge)
        first = edge.post("/items", json=ITEM, headers=_keyed(owner, key))
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        retries = [edge.post("/items", json=ITEM, headers=_keyed(owner, key))]
        for url in live_stack.replica_urls():
            with httpx.Client(base_url=url, timeout=10) as replica:
                retries.append(replica.post("/items", json=ITEM, headers=_keyed(owner, key)))
        assert len(retries) == live_stack.replicas + 1
        for again in retries:
            assert again.status_code == 201, again.text
            assert again.content == first.content
            assert again.headers["idempotent-replayed"] == "true"
            for header in STORED:
                assert again.headers[header] == first.headers[header]
            # A new request, answered from storage: its own id.
            assert again.headers["x-request-id"] != first.headers["x-request-id"]
        assert [item["id"] for item in _owned(edge, owner)] == [first.json()["id"]]


def test_another_body_with_the_key_is_a_422_problem_and_writes_nothing(
    live_stack: LiveStack,
) -> None:
    key = uuid.uuid4().hex
    with httpx.Client(base_url=live_stack.nginx, timeout=10) as edge:
        owner = new_user(edge)
        first = edge.post("/items", json=ITEM, headers=_keyed(owner, key))
        assert first.status_code == 201, first.text
        other = edge.post("/items", json={**ITEM, "price": 4}, headers=_keyed(owner, key))
        body = assert_problem(other, 422)
        assert "Idempotency-Key" in body["detail"], body
        assert len(_owned(edge, owner)) == 1


def test_concurrent_keyed_posts_through_nginx_write_one_item(live_stack: LiveStack) -> None:
    """The same keyed POST from 12 clients at once, spread over the replicas by nginx: one
    processes it; each other gets its stored answer or, while it runs, a 409 problem to retry."""
    key = uuid.uuid4().hex
    with httpx.Client(base_url=live_stack.nginx, timeout=10) as edge:
        owner = new_user(edge)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_stack.nginx, timeout=10) as client:
            return client.post("/items", json=ITEM, headers=_keyed(owner, key))

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, range(12)))
    created = [a for a in answers if a.status_code == 201]
    in_use = [a for a in answers if a.status_code == 409]
    assert len(created) + len(in_use) == len(answers), [a.status_code for a in answers]
    assert created, [a.text for a in answers]
    assert {a.content for a in created} == {created[0].content}
    for answer in in_use:
        assert_problem(answer, 409)
        assert answer.headers["retry-after"] == "1"
    with httpx.Client(base_url=live_stack.nginx, timeout=10) as edge:
        assert [item["id"] for item in _owned(edge, owner)] == [created[0].json()["id"]]
        # Retried once the first is done, each 409 gets the stored answer.
        again = edge.post("/items", json=ITEM, headers=_keyed(owner, key))
        assert again.status_code == 201, again.text
        assert again.content == created[0].content
