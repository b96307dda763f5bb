"""Faults under load against a live native stack (`make chaos`): what users see, measured.

Each test runs a bounded load through nginx (threads of keep-alive clients, one kind of request
per thread; see load.py), makes one fault for real while it runs (a signal to one of the stack's
own processes, or supervisord stopping a program), lifts it, and checks what the clients saw and
what the stack reported. The numbers go to tests/chaos/results/ and from there to the table of
docs/reliability.md. Tests run in file order on one stack; each starts by waiting until nginx
routes to every replica again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

import httpx

from stack.ephemeral import EphemeralStack
from stack.testing.processes import frozen

from .faults import poll
from .keyed import assert_one_item_per_key, create_with_key
from .load import (
    TRANSPORT_ERROR,
    Load,
    Operation,
    Sample,
    assert_writes_kept,
    by_status,
    create,
    during,
    percentile,
    read_cached,
    read_list,
    read_own,
    recovery_seconds,
    seed,
    summary,
    update,
)
from .results import Results

PROBLEM = "application/problem+json"
DB_KINDS = ("list", "create", "update")


def live(client: httpx.Client, worker: object) -> httpx.Response:
    return client.get("/health/live")


def _mix(seeded_ids: Sequence[int], *kinds: str) -> list[tuple[str, Operation]]:
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


def _of(samples: Sequence[Sample], *kinds: str) -> list[Sample]:
    return [s for s in samples if s.kind in kinds]


def _failed(samples: Sequence[Sample]) -> list[Sample]:
    return [s for s in samples if not s.ok]


def _explain(failed: Sequence[Sample], load: Load) -> str:
    """For an assertion message: errors by kind and status, and the first transport errors."""
    kinds = {
        kind: by_status(s for s in failed if s.kind == kind) for kind in {s.kind for s in failed}
    }
    return f"{kinds} {load.failures[:3]}"


def _ready(stack: EphemeralStack, replica: int) -> httpx.Response | None:
    try:
        return httpx.get(f"{stack.replica_url(replica)}/health/ready", timeout=3)
    except httpx.TransportError:
        return None


def _cache_hit(stack: EphemeralStack, item_id: int) -> bool:
    response = httpx.get(f"{stack.nginx}/items/{item_id}", timeout=5)
    return bool(response.headers.get("x-cache") == "hit")


def _all_problems(samples: Sequence[Sample]) -> None:
    """Every error the clients saw is in the API's one error shape."""
    not_problems = [s for s in _failed(samples) if s.content_type != PROBLEM]
    assert not_problems == [], not_problems[:5]


def test_replica_killed_with_sigkill(chaos_stack: EphemeralStack, results: Results) -> None:
    """No failed GET; supervisord restarts it; Prometheus sees it down, then up; the alert
    goes pending (its `for: 1m` outlasts the restart, so it never fires). The POSTs carry
    Idempotency-Keys and the clients retry the ones the kill cut off: one item per key."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    # Three writing threads of eight: more POSTs in flight when the replica dies.
    mix = _mix(seeded.cached_ids, "read", "keyed", "list", "own", "keyed")
    victim = 2
    instance = stack.topology.api_addresses[victim - 1]
    old_pid = stack.pid(f"api:api-{victim}")
    seen: dict[str, float] = {}

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
            ready = _ready(stack, victim)
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
    gets = _of(samples, "read", "list", "own")
    assert len(gets) > 500
    assert _failed(gets) == [], _explain(_failed(gets), load)
    # A write in flight on the killed replica is lost with it, and nginx must not re-send it
    # (it may have committed): a 502 problem, at most one per writing thread. The client
    # retries it with its key, and every POST ends with its 201.
    keyed = load.keyed_creates
    assert len(keyed) > 100
    cut_off = [k for k in keyed if k.attempts[0] != 201]
    assert {k.attempts[0] for k in cut_off} <= {502}, cut_off
    assert len(cut_off) <= 3, cut_off
    assert all(k.attempts[-1] == 201 for k in keyed), [k for k in keyed if k.attempts[-1] != 201]
    assert _failed(_of(samples, "keyed")) == [], _explain(_failed(_of(samples, "keyed")), load)
    _all_problems(samples)
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
    mix = _mix(seeded.cached_ids, "read", "list", "own", "create", "update")
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
    writes = _of(samples, "create", "update")
    assert len(writes) > 300
    assert _failed(samples) == [], _explain(_failed(samples), load)
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


def test_redis_stopped_then_started(chaos_stack: EphemeralStack, results: Results) -> None:
    """Reads keep answering 200 from PostgreSQL, the cache comes back by itself, and nothing
    stale is served afterwards: writes made while Redis was away could not invalidate, but
    Redis comes back empty (persistence is off)."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    mix = _mix(seeded.cached_ids, "read", "read", "own", "update", "list")

    with Load(stack.nginx, seeded, mix, threads=8, pause=0.005) as load:
        time.sleep(2)
        stopping = time.monotonic()
        assert "stopped" in stack.supervisorctl("stop", "redis")
        time.sleep(8)
        lifted = time.monotonic()
        assert "started" in stack.supervisorctl("start", "redis")

        poll(lambda: _cache_hit(stack, seeded.cached_ids[0]), timeout=20, interval=0.05)
        hits_again = time.monotonic() - lifted
        time.sleep(3)

    samples = load.samples
    assert _failed(samples) == [], _explain(_failed(samples), load)
    before = [s for s in samples if s.end < stopping]
    assert any(s.cache == "hit" for s in before), "the load never hit the cache"
    in_fault = during(samples, [(stopping, lifted)])
    assert max(s.latency for s in in_fault) < 1.0
    assert load.stale_reads == []
    assert not (stack.data_dir / "stack" / "dump.rdb").exists(), "Redis persisted its data"
    # Every replica, asked directly, serves each item at its last acknowledged version.
    for worker in seeded.workers:
        for replica in range(1, stack.topology.replicas + 1):
            got = httpx.get(f"{stack.replica_url(replica)}/items/{worker.item_id}", timeout=5)
            assert got.json()["version"] == worker.version, (replica, worker, got.json())
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "Redis stopped, then started",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=hits_again,
            extra={
                "cache_hits_again_after_start_s": round(hits_again, 2),
                "writes_while_redis_was_down": len([s for s in _of(in_fault, "update") if s.ok]),
                "acknowledged_writes_checked": kept,
            },
        ),
    )


def test_postgres_stopped_then_started(chaos_stack: EphemeralStack, results: Results) -> None:
    """503 problem+json at once (no hung requests, no 500s), readiness red, cached reads and
    liveness unaffected; the pools recover by themselves; no acknowledged write is lost."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=9)
    mix = _mix(seeded.cached_ids, "read", "live", "list", "create", "update", "read")
    pids = [stack.pid(f"api:api-{r}") for r in range(1, stack.topology.replicas + 1)]

    with Load(stack.nginx, seeded, mix, threads=9, pause=0.005) as load:
        time.sleep(2)
        stopping = time.monotonic()
        assert "stopped" in stack.supervisorctl("stop", "postgres")

        def all_red() -> bool:
            answers = [_ready(stack, r) for r in range(1, stack.topology.replicas + 1)]
            return all(
                a is not None
                and a.status_code == 503
                and a.headers["content-type"] == PROBLEM
                and a.json()["checks"]["database"]["status"] == "down"
                for a in answers
            )

        poll(all_red, timeout=10)
        red_after = time.monotonic() - stopping
        time.sleep(8)
        lifted = time.monotonic()
        assert "started" in stack.supervisorctl("start", "postgres")

        def all_ready() -> bool:
            answers = [_ready(stack, r) for r in range(1, stack.topology.replicas + 1)]
            return all(a is not None and a.status_code == 200 for a in answers)

        poll(all_ready, timeout=30)
        ready_after = time.monotonic() - lifted
        time.sleep(4)

    samples = load.samples
    failed = _failed(samples)
    assert failed, "the outage was not seen"
    # As when PostgreSQL hangs: a COMMIT cut off by the shutdown may have applied, which the
    # writer's next conditional PATCH learns from one 412.
    refused = [s for s in failed if s.status == 412]
    assert {s.kind for s in refused} <= {"update"}, _explain(failed, load)
    assert len(refused) <= load.threads, _explain(failed, load)
    failed = [s for s in failed if s.status != 412]
    assert {s.status for s in failed} == {503}, _explain(failed, load)
    assert all(s.retry_after for s in failed), "a 503 without Retry-After"
    assert {s.kind for s in failed} <= set(DB_KINDS), _explain(failed, load)
    assert load.stale_reads == []
    _all_problems(samples)
    # Refused connections fail fast; nothing waits for a timeout, so nothing piles up.
    assert max(s.latency for s in failed) < 2.5
    recovery = recovery_seconds(samples, lifted, lambda s: s.ok or s.status == 412)
    assert recovery < 15
    # The same processes recovered: nothing was restarted to get the pools back.
    assert [stack.pid(f"api:api-{r}") for r in range(1, stack.topology.replicas + 1)] == pids
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "PostgreSQL stopped, then started",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=recovery,
            extra={
                "readiness_red_after_s": round(red_after, 2),
                "all_replicas_ready_after_start_s": round(ready_after, 2),
                "max_ms_of_a_503": round(max(s.latency for s in failed) * 1000, 1),
                "cached_reads_and_liveness_during_fault": by_status(
                    _of(during(samples, [(stopping, lifted)]), "read", "live")
                ),
                "acknowledged_writes_checked": kept,
            },
        ),
    )


def test_postgres_hangs(chaos_stack: EphemeralStack, results: Results) -> None:
    """A database that accepts connections and answers nothing (every PostgreSQL process
    SIGSTOPped): the API's own timeouts answer 503 well inside nginx's 10 s, and its event
    loop keeps serving what needs no database."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    mix = _mix(seeded.cached_ids, "read", "live", "list", "create", "update", "read", "live")

    with Load(stack.nginx, seeded, mix, threads=8, pause=0.005) as load:
        time.sleep(2)
        with frozen(stack.pid("postgres"), with_children=True):
            stopping = time.monotonic()
            time.sleep(12)
            lifted = time.monotonic()
        time.sleep(6)

    samples = load.samples
    in_fault = during(samples, [(stopping, lifted)])
    quick = _of(in_fault, "read", "live")
    assert len(quick) > 200
    assert _failed(quick) == [], _explain(_failed(quick), load)
    # The event loop is free: what needs no database answers as fast as ever.
    assert percentile((s.latency for s in quick), 99) < 0.25
    failed = _failed(samples)
    assert failed, "the hang was not seen"
    # A PATCH whose COMMIT was cut off by the timeout (503) applies when PostgreSQL resumes; the
    # client's next conditional PATCH then gets one 412 (the API saying so), re-reads, and goes
    # on. More than one per writer would mean a stale cache kept it looping.
    refused = [s for s in failed if s.status == 412]
    assert {s.kind for s in refused} <= {"update"}, _explain(failed, load)
    assert len(refused) <= load.threads, _explain(failed, load)
    assert {s.status for s in failed} - {412} == {503}, _explain(failed, load)
    assert load.stale_reads == []
    _all_problems(samples)
    # Pool wait (2 s) + asyncpg's command_timeout (6 s): the API answers before nginx gives up.
    assert max(s.latency for s in samples) < 9.5
    recovery = recovery_seconds(samples, lifted, lambda s: s.ok or s.status == 412)
    assert recovery < 10
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "PostgreSQL hangs (SIGSTOP, 12 s)",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=recovery,
            extra={
                "p99_ms_of_cached_reads_and_liveness": round(
                    percentile((s.latency for s in quick), 99) * 1000, 1
                ),
                "max_ms_of_a_database_request": round(
                    max(s.latency for s in _of(in_fault, *DB_KINDS)) * 1000, 1
                ),
                "acknowledged_writes_checked": kept,
            },
        ),
    )


def test_redis_hangs(chaos_stack: EphemeralStack, results: Results) -> None:
    """A Redis that answers nothing costs one short socket timeout, then the cache is bypassed:
    reads keep answering 200 and latency stays bounded."""
    stack = chaos_stack
    stack.wait_for_full_pool()
    seeded = seed(stack.nginx, clients=8)
    mix = _mix(seeded.cached_ids, "read", "read", "own", "list", "update")

    with Load(stack.nginx, seeded, mix, threads=8, pause=0.005) as load:
        time.sleep(2)
        with frozen(stack.pid("redis")):
            stopping = time.monotonic()
            time.sleep(6)
            lifted = time.monotonic()

        poll(lambda: _cache_hit(stack, seeded.cached_ids[0]), timeout=20, interval=0.05)
        hits_again = time.monotonic() - lifted
        time.sleep(2)

    samples = load.samples
    assert _failed(samples) == [], _explain(_failed(samples), load)
    in_fault = during(samples, [(stopping, lifted)])
    # REDIS_SOCKET_TIMEOUT_SECONDS is 0.1 s; the rest is this 2-core host under load.
    assert max(s.latency for s in in_fault) < 1.0
    kept = assert_writes_kept(stack.nginx, seeded)
    results.record(
        "Redis hangs (SIGSTOP, 6 s)",
        summary(
            samples,
            [(stopping, lifted)],
            recovery=hits_again,
            extra={
                "cache_hits_again_after_resume_s": round(hits_again, 2),
                # Writes while Redis hung could not invalidate; a hung Redis keeps its entries,
                # so a read may be stale for up to CACHE_TTL_SECONDS (docs/reliability.md).
                "stale_reads_after_acknowledged_writes": len(load.stale_reads),
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
    mix = _mix(seeded.cached_ids, "read", "live", "list", "create", "update", "own")

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
    failed = _failed(samples)
    # A PATCH answered 504 may have committed when the replica resumed: the client's next
    # conditional PATCH then gets 412, which is the API saying so (load.update resynchronises).
    # A response the replica was writing at the instant it froze is cut off: nginx has already
    # passed its headers on, so after its read timeout it can only close the connection (a
    # transport error, not a 504). Either way the client waits the read timeout, no longer.
    assert {s.status for s in failed} <= {504, 412, TRANSPORT_ERROR}, _explain(failed, load)
    timeouts = [s for s in failed if s.status in (504, TRANSPORT_ERROR)]
    assert timeouts, "no request reached the hung replica"
    assert all(9.5 < s.latency < 11.5 for s in timeouts), [s.latency for s in timeouts]
    assert len(timeouts) <= 2 * load.threads
    assert load.stale_reads == []
    _all_problems(samples)
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
