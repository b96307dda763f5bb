"""A bounded load of real HTTP requests through nginx, recorded one sample per request.

Threads with one keep-alive httpx client each, like browsers behind a proxy: nginx and the
replicas see concurrent connections, and every request's start, latency and status is kept, so
the numbers can be cut at the moment a fault was made and the moment it was lifted.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from .keyed import KeyedCreate

# A transport failure (connection refused or reset, client timeout) has no HTTP status.
TRANSPORT_ERROR = 0


@dataclass(frozen=True)
class Sample:
    kind: str
    start: float  # time.monotonic() when the request was sent
    latency: float  # seconds
    status: int
    content_type: str = ""
    cache: str = ""
    retry_after: str = ""

    @property
    def end(self) -> float:
        return self.start + self.latency

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Write:
    """A write the API acknowledged with 2xx: it must be readable afterwards."""

    item_id: int
    version: int
    name: str


Operation = Callable[[httpx.Client, "Worker"], httpx.Response]


@dataclass
class Worker:
    """One client: its own token and item, so its conditional PATCHes never race another's."""

    index: int
    auth: dict[str, str]
    item_id: int
    version: int
    writes: list[Write] = field(default_factory=list)
    # Reads right after an acknowledged write that returned an older version.
    stale: list[str] = field(default_factory=list)
    user_id: int = 0
    keyed: list[KeyedCreate] = field(default_factory=list)


@dataclass
class Seed:
    workers: list[Worker]
    cached_ids: list[int]


def seed(base_url: str, clients: int, cached_items: int = 20) -> Seed:
    """Users and items made through the API before the load starts."""
    workers: list[Worker] = []
    cached: list[int] = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for index in range(clients):
            user = client.post(
                "/users", json={"email": f"chaos-{uuid.uuid4().hex}@example.com", "name": "chaos"}
            )
            assert user.status_code == 201, user.text
            auth = {"Authorization": f"Bearer {user.json()['token']}"}
            item = client.post(
                "/items", json={"name": f"w{index}-v1", "price": 1}, headers=auth
            ).json()
            workers.append(
                Worker(index, auth, item["id"], item["version"], user_id=user.json()["id"])
            )
        for n in range(cached_items):
            item = client.post(
                "/items", json={"name": f"cached-{n}", "price": 2}, headers=workers[0].auth
            ).json()
            cached.append(item["id"])
            # Warm the cache: the load then reads what a busy service would have in Redis.
            assert client.get(f"/items/{item['id']}").status_code == 200
    return Seed(workers, cached)


def read_cached(ids: Sequence[int]) -> Operation:
    counter = itertools.count()

    def run(client: httpx.Client, worker: Worker) -> httpx.Response:
        return client.get(f"/items/{ids[next(counter) % len(ids)]}")

    return run


def read_list(client: httpx.Client, worker: Worker) -> httpx.Response:
    # Always PostgreSQL: no cache in front of pages.
    return client.get("/items", params={"limit": 5, "cursor": worker.item_id})


def read_own(client: httpx.Client, worker: Worker) -> httpx.Response:
    return client.get(f"/items/{worker.item_id}")


def create(client: httpx.Client, worker: Worker) -> httpx.Response:
    response = client.post("/items", json={"name": "created", "price": 3}, headers=worker.auth)
    if response.status_code == 201:
        body = response.json()
        worker.writes.append(Write(body["id"], body["version"], body["name"]))
    return response


def update(client: httpx.Client, worker: Worker) -> httpx.Response:
    """A conditional PATCH of the worker's own item, then a read of it through nginx.

    The 2xx is recorded as an acknowledged write; the read, served by whichever replica nginx
    picks, from Redis or PostgreSQL, must already show it (the cache is invalidated after the
    commit, before the answer).
    """
    name = f"w{worker.index}-v{worker.version + 1}"
    response = client.patch(
        f"/items/{worker.item_id}",
        json={"name": name},
        headers={**worker.auth, "If-Match": f'"{worker.version}"'},
    )
    if response.status_code == 200:
        worker.version = response.json()["version"]
        worker.writes.append(Write(worker.item_id, worker.version, name))
        read = client.get(f"/items/{worker.item_id}")
        if read.status_code == 200 and read.json()["version"] < worker.version:
            worker.stale.append(
                f"item {worker.item_id}: read v{read.json()['version']} "
                f"after v{worker.version} was acknowledged"
            )
    elif response.status_code == 412:
        # Only possible if an earlier PATCH committed but its answer was lost: resynchronise.
        worker.version = int(client.get(f"/items/{worker.item_id}").headers["etag"].strip('"'))
    return response


class Load:
    """`threads` clients, thread i running operation i % len(mix) until stopped."""

    def __init__(
        self,
        base_url: str,
        seeded: Seed,
        mix: Sequence[tuple[str, Operation]],
        *,
        threads: int = 8,
        timeout: float = 30.0,
        pause: float = 0.0,
    ) -> None:
        assert threads <= len(seeded.workers), "each thread needs its own worker"
        self.base_url = base_url
        self.seeded = seeded
        self.mix = list(mix)
        self.threads = threads
        self.timeout = timeout
        self.pause = pause
        self.samples: list[Sample] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self, worker: Worker) -> None:
        # One kind per thread (round robin over the mix): a kind that hangs during a fault
        # holds up only its own threads, so the others keep measuring what their users see.
        kind, operation = self.mix[worker.index % len(self.mix)]
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    response = operation(client, worker)
                except httpx.TransportError as exc:
                    self.samples.append(
                        Sample(kind, start, time.monotonic() - start, TRANSPORT_ERROR)
                    )
                    self.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                self.samples.append(
                    Sample(
                        kind,
                        start,
                        time.monotonic() - start,
                        response.status_code,
                        response.headers.get("content-type", ""),
                        response.headers.get("x-cache", ""),
                        response.headers.get("retry-after", ""),
                    )
                )
                if self.pause:
                    time.sleep(self.pause)

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._run, args=(worker,), daemon=True)
            for worker in self.seeded.workers[: self.threads]
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"

    @property
    def writes(self) -> list[Write]:
        return [w for worker in self.seeded.workers for w in worker.writes]

    @property
    def keyed_creates(self) -> list[KeyedCreate]:
        return [k for worker in self.seeded.workers for k in worker.keyed]

    @property
    def stale_reads(self) -> list[str]:
        return [s for worker in self.seeded.workers for s in worker.stale]


def assert_writes_kept(base_url: str, seeded: Seed) -> int:
    """Every acknowledged write is still there, read back through nginx; returns how many.

    A worker's item may be ahead of its last acknowledged version (a PATCH that committed but
    whose answer was lost), never behind it.
    """
    checked = 0
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for worker in seeded.workers:
            for write in worker.writes:
                response = client.get(f"/items/{write.item_id}")
                assert response.status_code == 200, (write, response.text)
                current = response.json()
                assert current["version"] >= write.version, (write, current)
                if current["version"] == write.version:
                    assert current["name"] == write.name, (write, current)
                checked += 1
    return checked


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def by_status(samples: Iterable[Sample]) -> dict[str, int]:
    counts = Counter("transport" if s.status == TRANSPORT_ERROR else str(s.status) for s in samples)
    return dict(sorted(counts.items()))


def during(samples: Iterable[Sample], windows: Sequence[tuple[float, float]]) -> list[Sample]:
    """Requests that were in flight at any moment of any of the windows (start, end)."""
    return [s for s in samples if any(s.start <= end and s.end >= start for start, end in windows)]


def recovery_seconds(
    samples: Sequence[Sample], lifted_at: float, healthy: Callable[[Sample], bool]
) -> float:
    """From the moment the fault was lifted to the end of the last unhealthy request after it."""
    late = [s.end for s in samples if s.end >= lifted_at and not healthy(s)]
    return max(late) - lifted_at if late else 0.0


def summary(
    samples: Sequence[Sample],
    fault: Sequence[tuple[float, float]],
    *,
    recovery: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The numbers docs/reliability.md's table reports for one fault (one or more windows)."""
    window = during(samples, fault)
    errors = [s for s in samples if not s.ok]
    return {
        "requests": len(samples),
        "requests_during_fault": len(window),
        "fault_seconds": round(sum(end - start for start, end in fault), 2),
        "statuses": by_status(samples),
        "errors": by_status(errors),
        "errors_by_kind": {
            kind: by_status(s for s in errors if s.kind == kind)
            for kind in sorted({s.kind for s in errors})
        },
        "p50_ms_during_fault": round(percentile((s.latency for s in window), 50) * 1000, 1),
        "p99_ms_during_fault": round(percentile((s.latency for s in window), 99) * 1000, 1),
        "max_ms_during_fault": round(max((s.latency for s in window), default=0.0) * 1000, 1),
        "p99_ms_overall": round(percentile((s.latency for s in samples), 99) * 1000, 1),
        "recovery_seconds": round(recovery, 2),
        **(extra or {}),
    }
