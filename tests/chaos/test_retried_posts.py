"""POSTs in flight on a replica that is killed, retried by their clients with their
Idempotency-Keys (`make chaos`): every one ends with its 201, and every key with one item.

In test_api_replica_faults.py's SIGKILL case a POST is in flight on the victim only by luck.
Here it is certain: the replica is frozen (SIGSTOP) first, a burst of keyed POSTs goes through
nginx (which spreads them over the replicas by least connections, so some wait on the frozen one),
and then the replica is killed. Each of those gets nginx's 502 (a POST is never re-sent: it may
have committed) and is retried by its client with the same key.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from stack.ephemeral import EphemeralStack

from .inflight import unread_requests
from .keyed import KeyedCreate, assert_one_item_per_key, create_with_key
from .load import Worker, percentile, seed
from .results import Results

POSTS = 12


def test_posts_cut_off_by_a_killed_replica_are_retried_with_their_keys(
    chaos_stack: EphemeralStack, results: Results
) -> None:
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=POSTS, cached_items=0)
    victim = 1
    old_pid = stack.pid(f"api:api-{victim}")

    def post(worker: Worker) -> KeyedCreate:
        with httpx.Client(base_url=stack.nginx, timeout=30) as client:
            create_with_key(client, worker)
        return worker.keyed[-1]

    port = int(stack.replica_addresses()[victim - 1].rsplit(":", 1)[1])
    os.kill(old_pid, signal.SIGSTOP)
    with ThreadPoolExecutor(POSTS) as pool:
        futures = [pool.submit(post, worker) for worker in seeded.workers]
        # Until a POST waits on the frozen replica, and at least long enough for every POST to be
        # routed; all well inside nginx's 10 s read timeout. A fixed 1.5 s once ended with none
        # there on CI's machine, and the test then proved nothing.
        frozen_at = time.monotonic()
        waiting = 0
        while time.monotonic() - frozen_at < 1.5 or not waiting:
            assert time.monotonic() - frozen_at < 6, "no POST reached the frozen replica in 6 s"
            time.sleep(0.1)
            waiting = unread_requests(stack.pid("nginx"), port)
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        keyed = [future.result() for future in futures]
    answered_after = time.monotonic() - killed_at
    stack.wait_for_full_pool()

    assert stack.pid(f"api:api-{victim}") not in (0, old_pid), "the replica was not restarted"
    cut_off = [k for k in keyed if k.attempts[0] != 201]
    # Every request waiting on the replica when it died was cut off (only POSTs were sent).
    assert len(cut_off) >= waiting, (waiting, cut_off)
    assert {k.attempts[0] for k in cut_off} == {502}, cut_off
    assert all(k.attempts[-1] == 201 for k in keyed), keyed
    assert len({k.item_id for k in keyed}) == POSTS
    one_each = assert_one_item_per_key(stack.nginx, seeded)
    assert one_each == POSTS
    first_failures = Counter(k.attempts[0] for k in cut_off)
    results.record(
        "API replica killed (SIGKILL) with POSTs in flight, retried with Idempotency-Key",
        {
            "requests": sum(len(k.attempts) for k in keyed),
            "requests_during_fault": len(keyed),
            # What the first attempts saw; after their retries, no POST failed.
            "errors": {
                f"{status}, then 201 on retry": n for status, n in sorted(first_failures.items())
            },
            "p99_ms_during_fault": round(percentile((k.seconds * 1000 for k in keyed), 99), 1),
            # The longest a client took, from its first attempt to its 201.
            "recovery_seconds": round(max(k.seconds for k in cut_off), 2),
            "posts": POSTS,
            "waiting_on_the_frozen_replica": waiting,
            "cut_off_by_the_kill": len(cut_off),
            "answered_by_replay": sum(k.replayed for k in keyed),
            "all_answered_after_kill_s": round(answered_after, 2),
            "keys_checked_one_item_each": one_each,
        },
    )
