"""Faults of the API replicas under load against a live native stack (`make chaos`): one killed,
each stopped in turn (a rolling deploy), one hung; what users see, measured.

Each test runs a bounded load through nginx (threads of keep-alive clients, one kind of request
per thread; see load.py), makes one fault for real while it runs (a signal to one of the stack's
own processes, or supervisord stopping a program), lifts it, and checks what the clients saw and
what the stack reported. The numbers go to tests/chaos/results/ and from there to the table of
docs/reliability.md. The chaos suite's tests share one stack (conftest.py); each starts by
waiting until nginx routes to every replica again. test_datastore_faults.py does the same to
PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import signal
import time

from stack.ephemeral import EphemeralStack
from stack.testing.killed import cut_mid_response
from stack.testing.processes import frozen

from .keyed import assert_one_item_per_key
from .load import (
    TRANSPORT_ERROR,
    Load,
    assert_writes_kept,
    seed,
    summary,
)
from .observed import (
    assert_all_problems,
    explain,
    failures,
    of_kinds,
    replica_ready,
    request_mix,
)
from .results import Results


def test_replica_killed_with_sigkill(chaos_stack: EphemeralStack, results: Results) -> None:
    """No failed GET (but one the kill may cut mid-answer); supervisord restarts it; Prometheus
    sees it down, then up; the alert goes pending (its `for: 1m` outlasts the restart, so it never
    fires). The POSTs carry Idempotency-Keys and the clients retry the ones the kill cut off: one
    item per key."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    # Three writing threads of eight: more POSTs in flight when the replica dies.
    mix = request_mix(seeded.cached_ids, "read", "keyed", "list", "own", "keyed")
    victim = 2
    instance = stack.topology.api_addresses[victim - 1]
    old_pid = stack.pid(f"api:api-{victim}")
    seen: dict[str, float] = {}

    errors_before = len(stack.log("nginx.error"))
    with Load(stack.nginx, seeded, mix, threads=8, pause=0.005) as load:
        time.sleep(2)
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        deadline = killed_at + 60
        while time.monotonic() < deadline and not {"up", "pending", "ready"} <= seen.keys():
            now = time.monotonic() - killed_at
            pending = [
                a
                for a in stack.alerts()
                if a["labels"]["alertname"] == "StackApiReplicaDown"
                and a["labels"].get("instance") == instance
                and a["state"] == "pending"
            ]
            if pending:
                seen.setdefault("pending", now)
            up = stack.query(f'up{{job="api",instance="{instance}"}}')
            value = up[0]["value"][1] if up else None
            if value == "0":
                seen.setdefault("down", now)
            elif value == "1" and "down" in seen:
                seen.setdefault("up", now)
            ready = replica_ready(stack, victim)
            if ready is not None and ready.status_code == 200:
                seen.setdefault("ready", now)
            time.sleep(0.2)
        stack.wait_for_full_pool()
        in_pool = time.monotonic() - killed_at
        time.sleep(1)

    samples = load.samples
    new_pid = stack.pid(f"api:api-{victim}")
    assert new_pid not in (0, old_pid), "supervisord did not restart the replica"
    assert {"down", "up", "pending", "ready"} <= seen.keys(), seen
    gets = of_kinds(samples, "read", "list", "own")
    assert len(gets) > 500
    # Only the kill itself may fail a GET, by cutting one answer mid-way (stack/testing/killed.py).
    cut = [s for s in failures(gets) if s.status == TRANSPORT_ERROR]
    assert len(cut) == len(failures(gets)), explain(failures(gets), load)
    assert len(cut) <= min(1, cut_mid_response(stack.log("nginx.error")[errors_before:]))
    # A write in flight on the killed replica is lost with it, and nginx must not re-send it
    # (it may have committed): a 502 problem, at most one per writing thread. The client
    # retries it with its key, and every POST ends with its 201.
    keyed = load.keyed_creates
    assert len(keyed) > 100
    cut_off = [k for k in keyed if k.attempts[0] != 201]
    assert {k.attempts[0] for k in cut_off} <= {502}, cut_off
    assert len(cut_off) <= 3, cut_off
    assert all(k.attempts[-1] == 201 for k in keyed), [k for k in keyed if k.attempts[-1] != 201]
    failed_keyed = failures(of_kinds(samples, "keyed"))
    assert failed_keyed == [], explain(failed_keyed, load)
    assert_all_problems(samples)
    kept = assert_writes_kept(stack.nginx, seeded)
    one_each = assert_one_item_per_key(stack.nginx, seeded)
    results.record(
        "API replica killed (SIGKILL)",
        summary(
            samples,
            [(killed_at, killed_at + seen["ready"])],
            recovery=in_pool,
            extra={
                "restarted_and_ready_after_s": round(seen["ready"], 2),
                "prometheus_down_after_s": round(seen["down"], 2),
                "prometheus_up_again_after_s": round(seen["up"], 2),
                "alert_pending_after_s": round(seen["pending"], 2),
                "back_in_nginx_pool_after_s": round(in_pool, 2),
                "acknowledged_writes_checked": kept,
                # Whether a POST was in flight on the replica when it died is luck here;
                # test_retried_posts.py makes sure of it.
                "keyed_posts": len(keyed),
                "keyed_posts_retried": len(cut_off),
                "keys_checked_one_item_each": one_each,
            },
        ),
    )


def test_replicas_stopped_with_sigterm_one_by_one(
    chaos_stack: EphemeralStack, results: Results
) -> None:
    """A rolling deploy: each replica drains (in-flight and kept-alive requests finish, nginx
    moves on) and comes back; not one request of any method fails."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=10)
    mix = request_mix(seeded.cached_ids, "read", "list", "own", "create", "update")
    windows: list[tuple[float, float]] = []
    back_in_pool: list[float] = []
    drained: list[str] = []

    with Load(stack.nginx, seeded, mix, threads=10, pause=0.005) as load:
        time.sleep(2)
        for replica in range(1, stack.topology.replicas + 1):
            stopping = time.monotonic()
            assert "stopped" in stack.supervisorctl("stop", f"api:api-{replica}")
            windows.append((stopping, time.monotonic()))
            assert "started" in stack.supervisorctl("start", f"api:api-{replica}")
            started = time.monotonic()
            stack.wait_for_full_pool()
            back_in_pool.append(time.monotonic() - started)
            drained += [
                line for line in stack.log(f"api-{replica}").splitlines() if '"drained"' in line
            ]
        time.sleep(1)

    samples = load.samples
    writes = of_kinds(samples, "create", "update")
    assert len(writes) > 300
    assert failures(samples) == [], explain(failures(samples), load)
    assert load.stale_reads == []
    assert len(drained) == stack.topology.replicas, drained
    kept = assert_writes_kept(stack.nginx, seeded)
    stop_seconds = [round(end - start, 2) for start, end in windows]
    results.record(
        "API replica stopped (SIGTERM), x3 rolling",
        summary(
            samples,
            windows,
            recovery=max(back_in_pool),
            extra={
                "stop_seconds": stop_seconds,
                "back_in_nginx_pool_after_start_s": [round(s, 2) for s in back_in_pool],
                "writes_during_run": len(writes),
                "acknowledged_writes_checked": kept,
            },
        ),
    )


def test_replica_hangs(chaos_stack: EphemeralStack, results: Results) -> None:
    """A replica that accepts connections and answers nothing: nginx's read timeout holds,
    the requests stuck there get a 504 problem after 10 s, everything else is served by the
    other replicas."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    mix = request_mix(seeded.cached_ids, "read", "live", "list", "create", "update", "own")

    with Load(stack.nginx, seeded, mix, threads=8, pause=0.005) as load:
        time.sleep(2)
        with frozen(stack.pid("api:api-2")):
            stopping = time.monotonic()
            time.sleep(15)
            lifted = time.monotonic()
        stack.wait_for_full_pool()
        in_pool = time.monotonic() - lifted
        time.sleep(1)

    samples = load.samples
    failed = failures(samples)
    # A PATCH answered 504 may have committed when the replica resumed: the client's next
    # conditional PATCH then gets 412, which is the API saying so (load.update resynchronises).
    # A response the replica was writing at the instant it froze is cut off: nginx has already
    # passed its headers on, so after its read timeout it can only close the connection (a
    # transport error, not a 504). Either way the client waits the read timeout, no longer.
    assert {s.status for s in failed} <= {504, 412, TRANSPORT_ERROR}, explain(failed, load)
    timeouts = [s for s in failed if s.status in (504, TRANSPORT_ERROR)]
    assert timeouts, "no request reached the hung replica"
    assert all(9.5 < s.latency < 11.5 for s in timeouts), [s.latency for s in timeouts]
    assert len(timeouts) <= 2 * load.threads
    assert load.stale_reads == []
    assert_all_problems(samples)
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "API replica hangs (SIGSTOP, 15 s)",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=in_pool,
            extra={"back_in_nginx_pool_after_resume_s": round(in_pool, 2)}
            | {"acknowledged_writes_checked": kept},
        ),
    )
