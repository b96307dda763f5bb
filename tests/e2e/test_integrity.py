"""Data integrity under concurrency, through nginx and three replicas, on the live stack.

Many clients update one item at once; no update the API acknowledged may vanish without the API
having said so, and a read after an acknowledged write sees it on every replica. Deleting a user
deletes what it owns, everywhere, caches included.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from stack.running import LiveStack
from stack.testing.api import ApiUser, assert_problem, new_item, new_user

CLIENTS = 12
WRITES_PER_CLIENT = 8


def _on_every_replica(stack: LiveStack, path: str) -> list[httpx.Response]:
    return stack.every_replica(path)


@dataclass
class Outcome:
    acknowledged: list[tuple[int, str]] = field(default_factory=list)  # (version, name)
    refused: int = 0
    unexpected: list[str] = field(default_factory=list)


def _contend(base_url: str, item_id: int, owner: ApiUser, *, conditional: bool) -> Outcome:
    """CLIENTS threads, each with its own connection through nginx, each writing until it has
    WRITES_PER_CLIENT acknowledged PATCHes (with If-Match: re-reading after every 412)."""
    outcome = Outcome()
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def writer(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as c:
            start.wait()
            done = 0
            while done < WRITES_PER_CLIENT:
                headers = dict(owner.auth)
                if conditional:
                    headers["If-Match"] = c.get(f"/items/{item_id}").headers["etag"]
                name = f"client-{index}-write-{done}-{uuid.uuid4().hex[:6]}"
                response = c.patch(f"/items/{item_id}", json={"name": name}, headers=headers)
                with lock:
                    if response.status_code == 200:
                        outcome.acknowledged.append((response.json()["version"], name))
                        done += 1
                    elif response.status_code == 412 and conditional:
                        outcome.refused += 1
                    else:
                        outcome.unexpected.append(f"{response.status_code} {response.text}")
                        return

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return outcome


@pytest.mark.parametrize("conditional", [True, False], ids=["if-match", "unconditional"])
def test_concurrent_updates_lose_no_acknowledged_write(
    live_stack: LiveStack, client: httpx.Client, conditional: bool
) -> None:
    """Every 200 carries its own version and versions advance by one per acknowledged write, so
    none was silently merged into another: with If-Match a stale writer gets 412 instead; without
    it, each writer is told the version its write became and can see it was superseded."""
    owner = new_user(client)
    item = new_item(client, owner, name="contended")
    outcome = _contend(live_stack.nginx, item["id"], owner, conditional=conditional)

    assert outcome.unexpected == []
    versions = sorted(version for version, _ in outcome.acknowledged)
    total = CLIENTS * WRITES_PER_CLIENT
    assert versions == list(range(2, total + 2)), "two acknowledged writes share a version"
    if conditional:
        assert outcome.refused > 0, "the clients never raced; the test proved nothing"
    # The final state is the last acknowledged write, on every replica.
    last_version, last_name = max(outcome.acknowledged)
    for response in [client.get(f"/items/{item['id']}"), *_on_every_replica(
        live_stack, f"/items/{item['id']}"
    )]:  # fmt: skip
        assert response.json()["version"] == last_version
        assert response.json()["name"] == last_name
        assert response.headers["etag"] == f'"{last_version}"'


def test_a_read_after_an_acknowledged_write_sees_it_on_every_replica(
    live_stack: LiveStack, client: httpx.Client
) -> None:
    owner = new_user(client)
    item = new_item(client, owner)
    url = f"/items/{item['id']}"
    for n in range(10):
        # Fill every replica's view (and the shared cache) with the current version first.
        assert {r.json()["version"] for r in _on_every_replica(live_stack, url)} == {n + 1}
        written = client.patch(url, json={"price": n}, headers=owner.auth)
        assert written.status_code == 200
        seen = [
            (r.json()["version"], r.json()["price"]) for r in _on_every_replica(live_stack, url)
        ]
        assert seen == [(n + 2, n)] * len(seen), seen


def test_a_stale_if_match_is_412_for_update_and_delete(client: httpx.Client) -> None:
    owner = new_user(client)
    item = new_item(client, owner)
    url = f"/items/{item['id']}"
    assert client.patch(url, json={"name": "v2"}, headers=owner.auth).status_code == 200
    for method, body in (("PATCH", {"name": "lost"}), ("DELETE", None)):
        stale = client.request(method, url, json=body, headers={**owner.auth, "If-Match": '"1"'})
        problem = assert_problem(stale, 412)
        assert "version 2" in problem["detail"]
        # A weak tag never matches (If-Match compares strongly), a list may.
        weak = client.request(method, url, json=body, headers={**owner.auth, "If-Match": 'W/"2"'})
        assert_problem(weak, 412)
    assert client.get(url).json()["name"] == "v2"
    listed = client.delete(url, headers={**owner.auth, "If-Match": '"7", "2"'})
    assert listed.status_code == 204
    assert_problem(client.get(url), 404)


def test_deleting_a_user_deletes_its_items_everywhere(
    live_stack: LiveStack, client: httpx.Client
) -> None:
    """Cascading, and every replica and the cache agree at once: nothing stale survives."""
    owner, other = new_user(client), new_user(client)
    items: list[dict[str, Any]] = [new_item(client, owner, name=f"owned-{n}") for n in range(3)]
    kept = new_item(client, other, name="someone else's")
    for item in items:
        # Cached on the way: a deletion must not leave them behind in Redis.
        assert all(
            r.status_code == 200 for r in _on_every_replica(live_stack, f"/items/{item['id']}")
        )

    assert_problem(client.delete(f"/users/{owner.id}"), 401)
    assert_problem(client.delete(f"/users/{owner.id}", headers=other.auth), 403)
    deleted = client.delete(f"/users/{owner.id}", headers=owner.auth)
    assert deleted.status_code == 204
    assert deleted.content == b""

    assert_problem(client.get(f"/users/{owner.id}"), 404)
    for item in items:
        for response in _on_every_replica(live_stack, f"/items/{item['id']}"):
            assert_problem(response, 404)
    owned = client.get("/items", params={"owner_id": owner.id}).json()
    assert owned["data"] == []
    # The token died with its user; the other user and their item are untouched.
    assert_problem(client.post("/items", json={"name": "x", "price": 1}, headers=owner.auth), 401)
    assert client.get(f"/items/{kept['id']}").status_code == 200
    assert client.get(f"/users/{other.id}").status_code == 200
