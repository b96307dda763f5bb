"""The data set, created through the public API before the load starts (never in the database).

Owners sign up, then create the items; both go through nginx like any client's requests, so the
data is exactly what the API would have stored. The item ids are saved most popular first: the
readers' Zipf draw favours the start of the list, and the list is shuffled so that the hot items
are not simply the first page of GET /items.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest.httpjson import Answer, HttpError, call

ATTEMPTS = 6  # for 5xx and lost connections
RATE_LIMITED_SECONDS = 300  # how long 429s are waited out: Compose's nginx allows 50 req/s
CONCURRENCY = 8


class SeedError(RuntimeError):
    pass


@dataclass(frozen=True)
class Seed:
    item_ids: list[int]  # most popular first
    user_ids: list[int]
    seconds: float = 0.0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Seed:
        data = json.loads(path.read_text(encoding="utf-8"))
        seed = cls([int(i) for i in data["item_ids"]], [int(i) for i in data["user_ids"]])
        if not seed.item_ids or not seed.user_ids:
            raise SeedError(f"{path}: a seed needs at least one item and one user")
        return seed


def _post(
    url: str, payload: Any, headers: dict[str, str] | None = None, ca: Path | None = None
) -> Answer:
    """POST with the retries any client owes a busy server: 429 after Retry-After, 502-504."""
    last, attempt = "", 0
    deadline = time.monotonic() + RATE_LIMITED_SECONDS
    while attempt < ATTEMPTS and time.monotonic() < deadline:
        try:
            answer = call("POST", url, payload, headers, timeout=15, ca=ca)
        except HttpError as exc:
            last = str(exc)
        else:
            if answer.status not in {429, 502, 503, 504}:
                return answer
            last = f"{answer.status} {answer.body[:200]!r}"
            if answer.status == 429:  # nginx's limit: wait as told, it is not a failure
                time.sleep(float(answer.headers.get("Retry-After") or 1))
                continue
        time.sleep(0.2 * 2**attempt)
        attempt += 1
    raise SeedError(f"POST {url} kept failing; last answer: {last}")


def _expect_created(answer: Answer, what: str) -> dict[str, Any]:
    if answer.status != 201:
        raise SeedError(f"creating {what} answered {answer.status}: {answer.body[:300]!r}")
    body: dict[str, Any] = answer.json()
    return body


def create_data(
    host: str,
    items: int,
    owners: int,
    log: Callable[[str], None] = print,
    ca: Path | None = None,
) -> Seed:
    """ca: what an https:// host's certificate is checked against (Settings.ca)."""
    started = time.monotonic()
    tag = uuid.uuid4().hex[:10]

    def sign_up(index: int) -> tuple[int, str]:
        body = _expect_created(
            _post(
                f"{host}/users",
                {"email": f"seed-{tag}-{index}@loadtest.example", "name": "seed"},
                ca=ca,
            ),
            "a seed owner",
        )
        return int(body["id"]), str(body["token"])

    def create(index: int) -> int:
        owner_id, token = people[index % len(people)]
        payload = {
            "name": f"item {index} of {owner_id}",
            "description": "seeded by loadtest " + "x" * (index % 200),
            "price": round(1 + (index * 7919 % 100000) / 100, 2),
        }
        answer = _post(f"{host}/items", payload, {"Authorization": f"Bearer {token}"}, ca)
        return int(_expect_created(answer, "a seed item")["id"])

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        people = list(pool.map(sign_up, range(owners)))
        item_ids = list(pool.map(create, range(items)))
    random.Random(tag).shuffle(item_ids)  # noqa: S311 - popularity order, not a secret
    seconds = time.monotonic() - started
    log(f"seeded {items} items of {owners} owners through {host} in {seconds:.1f}s")
    return Seed(item_ids, [owner for owner, _ in people], round(seconds, 2))
