"""What the fault tests share: the mixes of requests their loads run, their samples cut by kind
and outcome (with what an assertion message shows of them), and two probes of the stack itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from stack.ephemeral import EphemeralStack

from .keyed import create_with_key
from .load import (
    TRANSPORT_ERROR,
    Load,
    Operation,
    Sample,
    by_status,
    create,
    read_cached,
    read_list,
    read_own,
    update,
)

PROBLEM = "application/problem+json"
DB_KINDS = ("list", "create", "update")


def live(client: httpx.Client, worker: object) -> httpx.Response:
    return client.get("/health/live")


def request_mix(seeded_ids: Sequence[int], *kinds: str) -> list[tuple[str, Operation]]:
    operations: dict[str, Operation] = {
        "read": read_cached(seeded_ids),
        "live": live,
        "list": read_list,
        "own": read_own,
        "create": create,
        "keyed": create_with_key,
        "update": update,
    }
    return [(kind, operations[kind]) for kind in kinds]


def of_kinds(samples: Sequence[Sample], *kinds: str) -> list[Sample]:
    return [s for s in samples if s.kind in kinds]


def failures(samples: Sequence[Sample]) -> list[Sample]:
    return [s for s in samples if not s.ok]


def explain(failed: Sequence[Sample], load: Load) -> str:
    """For an assertion message: errors by kind and status, and the first transport errors."""
    kinds = {
        kind: by_status(s for s in failed if s.kind == kind) for kind in {s.kind for s in failed}
    }
    return f"{kinds} {load.failures[:3]}"


def replica_ready(stack: EphemeralStack, replica: int) -> httpx.Response | None:
    try:
        return httpx.get(f"{stack.replica_url(replica)}/health/ready", timeout=3)
    except httpx.TransportError:
        return None


def cache_hit(stack: EphemeralStack, item_id: int) -> bool:
    response = httpx.get(f"{stack.nginx}/items/{item_id}", timeout=5)
    return bool(response.headers.get("x-cache") == "hit")


def assert_all_problems(samples: Sequence[Sample]) -> None:
    """Every error answer the clients got is in the API's one error shape. A connection cut
    mid-response (TRANSPORT_ERROR) carries no answer to judge; each test says whether it
    allows one."""
    answered = [s for s in failures(samples) if s.status != TRANSPORT_ERROR]
    not_problems = [s for s in answered if s.content_type != PROBLEM]
    assert not_problems == [], not_problems[:5]
