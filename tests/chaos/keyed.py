"""POSTs that carry an Idempotency-Key and are retried with it until they get an answer.

The client side of app.idempotency under faults: a POST cut off by a killed replica (nginx's 502,
never re-sent by nginx itself: it may have committed) is retried by the client with its key, and
afterwards every key has made exactly one item.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass

import httpx

from .load import TRANSPORT_ERROR, Seed, Worker, Write


@dataclass(frozen=True)
class KeyedCreate:
    """A POST /items sent with an Idempotency-Key, and every attempt it took (retries included)."""

    key: str
    name: str
    # The status of each attempt in order, TRANSPORT_ERROR for one that got no answer.
    attempts: tuple[int, ...]
    item_id: int | None
    replayed: bool
    # From the first attempt to the last answer.
    seconds: float


# What a client retries a keyed POST after: no answer, nginx's 502/504 (the replica died or hung
# mid-request), a 503 (the database), a 409 (the first attempt with the key still running).
RETRIED_STATUSES = frozenset({409, 502, 503, 504})


def create_with_key(client: httpx.Client, worker: Worker, attempts: int = 5) -> httpx.Response:
    """A POST /items with an Idempotency-Key, retried with the same key until it gets an answer.

    Safe to retry whatever happened to the first attempt: if it committed before its answer was
    lost, the retry gets that answer back (Idempotent-Replayed) instead of a second item.
    """
    key = str(uuid.uuid4())
    name = f"keyed-{key}"
    headers = {**worker.auth, "Idempotency-Key": f'"{key}"'}
    statuses: list[int] = []
    response: httpx.Response | None = None
    error: httpx.TransportError | None = None
    started = time.monotonic()
    for _ in range(attempts):
        try:
            response = client.post("/items", json={"name": name, "price": 3}, headers=headers)
        except httpx.TransportError as exc:
            statuses.append(TRANSPORT_ERROR)
            response, error = None, exc
            time.sleep(0.1)
            continue
        statuses.append(response.status_code)
        if response.status_code not in RETRIED_STATUSES:
            break
        time.sleep(float(response.headers.get("retry-after", "0.1")))
    created = response is not None and response.status_code == 201
    item_id = response.json()["id"] if response is not None and created else None
    worker.keyed.append(
        KeyedCreate(
            key,
            name,
            tuple(statuses),
            item_id,
            response is not None and response.headers.get("idempotent-replayed") == "true",
            time.monotonic() - started,
        )
    )
    if response is None:
        assert error is not None
        raise error
    if response.status_code == 201:
        body = response.json()
        worker.writes.append(Write(body["id"], body["version"], body["name"]))
    return response


def assert_one_item_per_key(base_url: str, seeded: Seed) -> int:
    """Every keyed POST made exactly one item, whatever its attempts saw; returns how many keys.

    Read back through nginx, page by page of each worker's own items.
    """
    checked = 0
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for worker in seeded.workers:
            if not worker.keyed:
                continue
            names: Counter[str] = Counter()
            ids: dict[str, int] = {}
            cursor = 0
            while cursor is not None:
                page = client.get(
                    "/items", params={"owner_id": worker.user_id, "limit": 100, "cursor": cursor}
                )
                assert page.status_code == 200, page.text
                for item in page.json()["data"]:
                    names[item["name"]] += 1
                    ids[item["name"]] = item["id"]
                cursor = page.json()["next_cursor"]
            for keyed in worker.keyed:
                assert names[keyed.name] == 1, (keyed, names[keyed.name])
                if keyed.item_id is not None:
                    assert ids[keyed.name] == keyed.item_id, keyed
                checked += 1
    return checked
